//! One log segment: `<base offset>.log` plus its `.index` and `.timeindex`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::index::{OffsetIndex, TimeIndex};

/// Kafka's file name for a segment file: the base offset in 20 digits.
pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// Headers of the last batches appended to the active segment kept in memory: consumers
/// at the tail read these, and finding their position then costs no read of the file.
const RECENT_BATCHES: usize = 16;

/// The active segment reserves disk space ahead of its end (`fallocate` with
/// `FALLOC_FL_KEEP_SIZE`: the file's length, and so everything that reads it, is
/// unchanged), as much again as it holds, from [`RESERVE_MIN`] up to this. Appends into
/// reserved space skip the filesystem's per-block allocation work (ext4's delayed
/// allocation), which was about a quarter of a buffered append's kernel time here; the
/// reservation left at the end is given back when the segment stops being active.
const RESERVE_MAX: u64 = 8 << 20;
const RESERVE_MIN: u64 = 64 << 10;

/// Suffix of the files of a segment the log cleaner is writing.
pub const CLEANED: &str = ".cleaned";

/// What recovery found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryOutcome {
    /// Valid bytes kept.
    pub valid_bytes: u64,
    /// Bytes cut off the end (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
    pub reason: Option<String>,
}

/// A segment of a partition log.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the first record this segment may hold.
    pub base_offset: i64,
    log_path: PathBuf,
    file: Arc<File>,
    size: u64,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    /// Offset after the last batch (== base offset when empty).
    next_offset: i64,
    /// Largest timestamp seen and the last offset of the batch that carried it.
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Wall-clock creation time, for `segment.ms`.
    pub created_ms: i64,
    /// (position, header) of the last [`RECENT_BATCHES`] batches appended, oldest first.
    recent: VecDeque<(u64, BatchHeader)>,
    /// Active: appends reserve space ahead (see [`RESERVE_MAX`]).
    reserving: bool,
    /// End of the space reserved so far (0: none, or not known after a restart).
    reserved: u64,
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.release_reserved();
    }
}

impl Segment {
    fn paths(dir: &Path, base: i64) -> (PathBuf, PathBuf, PathBuf) {
        (
            dir.join(file_name(base, ".log")),
            dir.join(file_name(base, ".index")),
            dir.join(file_name(base, ".timeindex")),
        )
    }

    /// Creates a new, empty, active segment.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Self> {
        let (log, idx, tidx) = Self::paths(dir, base_offset);
        let mut seg = Self::create_at(base_offset, log, idx, tidx, now_ms)?;
        seg.reserving = true;
        Ok(seg)
    }

    /// Creates the segment the log cleaner writes: `<base>.log.cleaned` and its indexes
    /// `.index.cleaned` and `.timeindex.cleaned`, which a restart deletes.
    pub fn create_cleaned(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Self> {
        let (log, idx, tidx) = Self::paths(dir, base_offset);
        let cleaned = |p: PathBuf| PathBuf::from(format!("{}{CLEANED}", p.display()));
        Self::create_at(
            base_offset,
            cleaned(log),
            cleaned(idx),
            cleaned(tidx),
            now_ms,
        )
    }

    /// Puts the log of a segment made by [`Segment::create_cleaned`] (written, closed
    /// and synced) in place of the segment with the same base offset. The old one's
    /// indexes go first, then its log is replaced: a crash at any point leaves a log
    /// whose indexes are either its own or missing (and then rebuilt).
    pub fn install_cleaned_log(&mut self) -> io::Result<()> {
        let (log, idx, tidx) = self.final_paths();
        for p in [&idx, &tidx] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(&self.log_path, &log)?;
        self.log_path = log;
        Ok(())
    }

    /// Names the indexes of a segment whose log [`Segment::install_cleaned_log`] put in
    /// place.
    pub fn install_cleaned_indexes(&mut self) -> io::Result<()> {
        let (_, idx, tidx) = self.final_paths();
        self.time_index.rename(&tidx)?;
        self.index.rename(&idx)
    }

    fn final_paths(&self) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        Self::paths(dir, self.base_offset)
    }

    fn create_at(
        base_offset: i64,
        log: PathBuf,
        idx: PathBuf,
        tidx: PathBuf,
        now_ms: i64,
    ) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log)?;
        let mut index = OffsetIndex::open(&idx, base_offset, true)?;
        let mut time_index = TimeIndex::open(&tidx, base_offset, true)?;
        index.cache()?;
        time_index.cache()?;
        Ok(Self {
            base_offset,
            log_path: log,
            file: Arc::new(file),
            size: 0,
            index,
            time_index,
            bytes_since_index: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            created_ms: now_ms,
            recent: VecDeque::new(),
            reserving: false,
            reserved: 0,
        })
    }

    /// Opens an existing segment. With `recover`, every batch is checked (framing, magic,
    /// CRC), the file is truncated at the first invalid one and both indexes are rebuilt;
    /// otherwise the indexes on disk are trusted when they look sane.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        recover: bool,
        index_interval: u64,
        now_ms: i64,
    ) -> io::Result<(Self, RecoveryOutcome)> {
        let (log, idx, tidx) = Self::paths(dir, base_offset);
        let file = OpenOptions::new().read(true).write(true).open(&log)?;
        let size = file.metadata()?.len();
        let index = OffsetIndex::open(&idx, base_offset, false)?;
        let time_index = TimeIndex::open(&tidx, base_offset, false)?;
        let mut seg = Self {
            base_offset,
            log_path: log,
            file: Arc::new(file),
            size,
            index,
            time_index,
            bytes_since_index: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            created_ms: now_ms,
            recent: VecDeque::new(),
            reserving: false,
            reserved: 0,
        };
        let indexes_sane = match seg.index.last()? {
            Some((off, pos)) => pos < size && off >= base_offset,
            None => size == 0 || !idx_missing(&seg),
        };
        let outcome = if recover || !indexes_sane {
            seg.rebuild(index_interval, recover)?
        } else {
            seg.load_tail()?;
            RecoveryOutcome {
                valid_bytes: size,
                truncated_bytes: 0,
                reason: None,
            }
        };
        Ok((seg, outcome))
    }

    /// Reads the batch header at `pos`, if a whole header is there.
    pub fn header_at(&self, pos: u64) -> io::Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        if let Ok(i) = self.recent.binary_search_by_key(&pos, |(p, _)| *p) {
            return Ok(Some(self.recent[i].1));
        }
        let mut buf = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(BatchHeader::parse(&buf).ok())
    }

    /// After a clean load: finds the next offset and max timestamp from the index tails.
    fn load_tail(&mut self) -> io::Result<()> {
        let mut pos = self.index.last()?.map(|(_, p)| p).unwrap_or(0);
        while let Some(h) = self.header_at(pos)? {
            let end = pos + h.total_size() as u64;
            if end > self.size {
                break;
            }
            self.next_offset = h.last_offset() + 1;
            if h.max_timestamp > self.max_timestamp {
                self.max_timestamp = h.max_timestamp;
                self.offset_of_max_timestamp = h.last_offset();
            }
            pos = end;
        }
        if let Some((ts, off)) = self.time_index.last()
            && ts > self.max_timestamp
        {
            self.max_timestamp = ts;
            self.offset_of_max_timestamp = off;
        }
        Ok(())
    }

    /// Scans every batch from the start, rebuilding both indexes; with `validate`, checks
    /// each batch and truncates at the first bad one.
    fn rebuild(&mut self, index_interval: u64, validate: bool) -> io::Result<RecoveryOutcome> {
        self.recent.clear();
        self.index.reset()?;
        self.time_index.reset()?;
        self.bytes_since_index = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        let mut pos = 0u64;
        let mut reason = None;
        while pos < self.size {
            let Some(h) = self.header_at(pos)? else {
                reason = Some(format!("torn batch header at position {pos}"));
                break;
            };
            let total = h.total_size() as u64;
            if h.batch_length < (HEADER_LEN - batch::LOG_OVERHEAD) as i32 || pos + total > self.size
            {
                reason = Some(format!("torn batch at position {pos}"));
                break;
            }
            if h.base_offset < self.next_offset {
                reason = Some(format!(
                    "batch at position {pos} has offset {} below {}",
                    h.base_offset, self.next_offset
                ));
                break;
            }
            if validate {
                let mut buf = vec![0u8; total as usize];
                self.file.read_exact_at(&mut buf, pos)?;
                if let Err(e) = batch::check_batch(&buf) {
                    reason = Some(format!("invalid batch at position {pos}: {e}"));
                    break;
                }
            }
            self.track(&h, pos, total, index_interval)?;
            pos += total;
        }
        let truncated = self.size - pos;
        if truncated > 0 {
            self.file.set_len(pos)?;
            self.size = pos;
        }
        Ok(RecoveryOutcome {
            valid_bytes: pos,
            truncated_bytes: truncated,
            reason: if truncated > 0 { reason } else { None },
        })
    }

    /// Index bookkeeping for a batch written at `pos` (Kafka's LogSegment.append rules).
    fn track(&mut self, h: &BatchHeader, pos: u64, total: u64, interval: u64) -> io::Result<()> {
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset();
        }
        if self.bytes_since_index > interval {
            self.index.append(h.last_offset(), pos)?;
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += total;
        self.next_offset = h.last_offset() + 1;
        Ok(())
    }

    /// Appends whole batches (offsets already assigned) at the end of the file.
    pub fn append(
        &mut self,
        bytes: &[u8],
        headers: &[BatchHeader],
        interval: u64,
    ) -> io::Result<()> {
        self.append_parts(&[bytes], headers, interval)
    }

    /// Appends batches given in pieces, with one positioned vectored write (`pwritev`);
    /// a short write is finished from a copy of what is left.
    pub fn append_parts(
        &mut self,
        parts: &[&[u8]],
        headers: &[BatchHeader],
        interval: u64,
    ) -> io::Result<()> {
        let start = self.size;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.reserve(start + total as u64);
        let written = if parts.len() <= 512 {
            let iov: Vec<std::io::IoSlice<'_>> =
                parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
            nix::sys::uio::pwritev(&*self.file, &iov, start as i64).map_err(io::Error::from)?
        } else {
            0
        };
        if written < total {
            let rest = parts.concat();
            self.file
                .write_all_at(&rest[written..], start + written as u64)?;
        }
        self.size += total as u64;
        let mut pos = start;
        for h in headers {
            let total = h.total_size() as u64;
            if self.recent.len() == RECENT_BATCHES {
                self.recent.pop_front();
            }
            self.recent.push_back((pos, *h));
            self.track(h, pos, total, interval)?;
            pos += total;
        }
        Ok(())
    }

    /// Reserves space ahead when an append up to `end` goes past the reservation. A
    /// failure (a filesystem without `fallocate`, or too little space left to reserve)
    /// ends reserving for this segment; the appends go on without it.
    fn reserve(&mut self, end: u64) {
        if !self.reserving || end <= self.reserved {
            return;
        }
        let from = self.reserved.max(self.size);
        let to = end + end.clamp(RESERVE_MIN, RESERVE_MAX);
        match nix::fcntl::fallocate(
            &*self.file,
            nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            from as i64,
            (to - from) as i64,
        ) {
            Ok(()) => self.reserved = to,
            Err(e) => {
                tracing::debug!(segment = %self.log_path.display(), "not reserving space ahead: {e}");
                self.reserving = false;
            }
        }
    }

    /// Gives back the space reserved past the end, if any was: truncating to the current
    /// length frees the blocks beyond it. (A segment that took no appends truncates
    /// nothing: a broker with many idle partitions shuts down without a truncate each.)
    fn release_reserved(&mut self) {
        let reserved = std::mem::take(&mut self.reserved);
        if !std::mem::take(&mut self.reserving) || reserved == 0 {
            return;
        }
        if let Err(e) = self.file.set_len(self.size) {
            tracing::warn!(segment = %self.log_path.display(), "giving back reserved space: {e}");
        }
    }

    /// Called when a newer segment takes over: a final time-index entry, indexes uncached,
    /// reserved space given back.
    pub fn close_active(&mut self) -> io::Result<()> {
        self.release_reserved();
        self.recent = VecDeque::new();
        if self.max_timestamp >= 0 {
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
        }
        // The entries only hint where batches are: a failed write leaves a sparser
        // index, not a wrong one, so the roll goes on.
        for res in [self.index.uncache(), self.time_index.uncache()] {
            if let Err(e) = res {
                tracing::warn!(segment = %self.log_path.display(), "writing index entries failed: {e}");
            }
        }
        Ok(())
    }

    /// Loads the indexes into memory (this segment is the active one).
    pub fn make_active(&mut self) -> io::Result<()> {
        self.reserving = true;
        // Space a crash left reserved past the end is given back by the first release.
        use std::os::unix::fs::MetadataExt;
        let allocated = self.file.metadata()?.blocks() * 512;
        if allocated > self.size.div_ceil(4096) * 4096 {
            self.reserved = self.size.max(1);
        }
        self.index.cache()?;
        self.time_index.cache()
    }

    /// Position of the batch holding `offset`, or `None` if the segment ends before it.
    pub fn position_of(&self, offset: i64) -> io::Result<Option<u64>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        if let Some((_, first)) = self.recent.front()
            && offset >= first.base_offset
        {
            // The recent batches are contiguous up to the segment's end, so one of them
            // holds the offset.
            let i = self
                .recent
                .partition_point(|(_, h)| h.last_offset() < offset);
            if let Some((pos, _)) = self.recent.get(i) {
                return Ok(Some(*pos));
            }
        }
        let mut pos = self.index.lookup(offset)?;
        while let Some(h) = self.header_at(pos)? {
            if h.last_offset() >= offset {
                return Ok(Some(pos));
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// The first record with timestamp >= `ts`: (offset, timestamp), if in this segment.
    pub fn find_timestamp(&self, ts: i64, min_offset: i64) -> io::Result<Option<(i64, i64)>> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let start_offset = self.time_index.lookup(ts)?.max(min_offset);
        let mut pos = self.position_of(start_offset)?.unwrap_or(self.size);
        while let Some(h) = self.header_at(pos)? {
            if h.max_timestamp >= ts && h.last_offset() >= min_offset {
                let batch_bytes = self.read_exact(pos, h.total_size())?;
                if let Ok(recs) = batch::records(&batch_bytes) {
                    for r in recs {
                        let off = h.base_offset + r.offset_delta as i64;
                        let rts = if h.is_log_append_time() {
                            h.max_timestamp
                        } else {
                            r.timestamp
                        };
                        if off >= min_offset && rts >= ts {
                            return Ok(Some((off, rts)));
                        }
                    }
                }
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// The exact record with the largest timestamp: (offset, timestamp).
    pub fn max_timestamp_record(&self) -> io::Result<Option<(i64, i64)>> {
        if self.max_timestamp < 0 {
            return Ok(None);
        }
        let pos = match self.position_of(self.offset_of_max_timestamp)? {
            Some(p) => p,
            None => return Ok(None),
        };
        let Some(h) = self.header_at(pos)? else {
            return Ok(None);
        };
        if h.is_log_append_time() {
            return Ok(Some((h.base_offset, h.max_timestamp)));
        }
        let batch_bytes = self.read_exact(pos, h.total_size())?;
        let recs = batch::records(&batch_bytes).unwrap_or_default();
        Ok(recs
            .iter()
            .find(|r| r.timestamp == h.max_timestamp)
            .map(|r| (h.base_offset + r.offset_delta as i64, r.timestamp))
            .or(Some((h.last_offset(), h.max_timestamp))))
    }

    /// Reads `len` bytes at `pos`.
    pub fn read_exact(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(Bytes::from(buf))
    }

    /// The shared file handle (reads continue even if the segment is deleted meanwhile).
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Bytes in the `.log` file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Offset after the last batch.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Largest timestamp in the segment (-1 if empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Whether no batch was written.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// fsyncs the log and its indexes.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.index.flush()?;
        self.time_index.flush()
    }

    /// Truncates the segment so it ends before `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let pos = self.position_of(offset)?.unwrap_or(self.size);
        self.recent.retain(|(p, _)| *p < pos);
        // (This frees any reserved space too: the next append reserves again.)
        self.file.set_len(pos)?;
        self.reserved = 0;
        self.size = pos;
        self.index.truncate_to_position(pos)?;
        self.time_index.truncate_to_offset(offset)?;
        self.next_offset = self.next_offset.min(offset);
        Ok(())
    }

    /// Deletes the files a segment made by [`Segment::create_cleaned`] was writing
    /// (the cleaning was given up).
    pub fn discard_cleaned(self) -> io::Result<()> {
        for p in [
            self.log_path.as_path(),
            self.index.path(),
            self.time_index.path(),
        ] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes the segment's files.
    pub fn delete(self) -> io::Result<()> {
        let (_, idx, tidx) = Self::paths(
            self.log_path.parent().unwrap_or(Path::new(".")),
            self.base_offset,
        );
        let txn = idx.with_extension("txnindex");
        for p in [&self.log_path, &idx, &tidx, &txn] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn idx_missing(seg: &Segment) -> bool {
    // An empty index over a non-empty log is only sane for a small segment that never
    // crossed the index interval; rebuilding is cheap then, so treat it as missing.
    seg.index.is_empty() && seg.size > 0
}
