//! The partition log: a directory of segments in Kafka's on-disk layout.
//!
//! ```text
//! <log.dir>/<topic>-<partition>/
//!     00000000000000000000.log        record batches v2, byte-for-byte as produced
//!     00000000000000000000.index      sparse offset -> position
//!     00000000000000000000.timeindex  sparse timestamp -> offset
//!     leader-epoch-checkpoint, partition.metadata
//! ```
//!
//! [`Log`] is plain data plus functions: the partition wraps it in a mutex, appends under
//! it, and hands readers a file region ([`ReadSlice`]) to read after the lock is released.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod index;
pub mod producer_state;
pub mod segment;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{TimestampType, TopicConfig};
use batch::{BatchError, BatchHeader, HEADER_LEN, ValidatedBatch};
use producer_state::{AbortedTxn, Check, ProducerError, ProducerState};
use segment::{RecoveryOutcome, Segment};

/// Errors from log operations.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Disk I/O failed.
    #[error("log i/o error: {0}")]
    Io(#[from] io::Error),
    /// The offset is outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// Requested offset.
        offset: i64,
        /// Log start offset.
        start: i64,
        /// Log end offset.
        end: i64,
    },
    /// A batch was rejected.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The producer state refused the batch (epoch, sequence, transaction).
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record.
    pub first_offset: i64,
    /// Offset given to the last record.
    pub last_offset: i64,
    /// The broker time stamped into the batches with LogAppendTime, else -1.
    pub log_append_time: i64,
    /// The batch was a retry of one already in the log; nothing was appended.
    pub duplicate: bool,
}

/// A region of a segment file holding whole batches (the last may be partial when
/// `max_bytes` cut it, as in Kafka).
#[derive(Debug, Clone)]
pub struct ReadSlice {
    /// The segment file.
    pub file: Arc<File>,
    /// Start position.
    pub position: u64,
    /// Length in bytes (0: nothing to return).
    pub len: usize,
}

impl ReadSlice {
    /// Reads the region into memory.
    pub fn read(&self) -> io::Result<Bytes> {
        let mut buf = vec![0u8; self.len];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

/// Files to fsync and the offset they cover, taken under the lock, synced outside it.
#[derive(Debug)]
pub struct FlushTarget {
    /// Segment files with unflushed data.
    pub files: Vec<Arc<File>>,
    /// Everything below this offset is durable once the files are synced.
    pub up_to: i64,
}

impl FlushTarget {
    /// fsyncs every file.
    pub fn sync(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        Ok(())
    }
}

/// Offsets that survive restarts through checkpoint files.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogCheckpoints {
    /// Everything below this offset was fsynced.
    pub recovery_point: i64,
    /// The log start offset (moved by retention and DeleteRecords).
    pub log_start_offset: i64,
}

/// One partition's log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: TopicConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    unflushed_messages: i64,
    last_flush_ms: i64,
    /// Rolled segments whose data is not yet fsynced.
    pending_flush: Vec<Arc<File>>,
    leader_epoch: i32,
    producers: ProducerState,
    /// Files changed since the last [`Log::flush_all`] (appends, rolls, recovery).
    dirty: bool,
    /// The log cleaner has compacted everything below this offset.
    first_dirty: i64,
    /// When the earliest tombstone the cleaner kept may go (unknown after a restart
    /// until the log's next pass).
    delete_horizon_ms: Option<i64>,
    /// A `.txnindex` file may not match the log (the cleaner failed to rewrite one): the
    /// next start must rebuild them, so no producer snapshot is written.
    txn_index_stale: bool,
}

impl Log {
    /// Opens the log in `dir` (creating it if new). After an unclean shutdown
    /// (`clean == false`) every segment from the one holding the recovery point on is
    /// validated and truncated at the first invalid batch; later segments are dropped.
    pub fn open(
        dir: &Path,
        config: TopicConfig,
        checkpoints: LogCheckpoints,
        clean: bool,
        now_ms: i64,
    ) -> Result<(Self, Vec<RecoveryOutcome>), LogError> {
        std::fs::create_dir_all(dir)?;
        let mut bases: Vec<i64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".log")?;
                (stem.len() == 20).then(|| stem.parse::<i64>().ok())?
            })
            .collect();
        bases.sort_unstable();
        // Stray index files of segments whose log is gone are removed; producer snapshots
        // are noted for load_producer_state (torn temporary ones removed).
        let mut snapshots = Vec::new();
        for e in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            // Files of a cleaning cut short by a crash or a stop.
            if name.ends_with(".snapshot.tmp") || name.ends_with(segment::CLEANED) {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if let Some(stem) = name.strip_suffix(".snapshot")
                && let Ok(o) = stem.parse::<i64>()
            {
                snapshots.push((o, e.path()));
                continue;
            }
            for suffix in [".index", ".timeindex", ".txnindex"] {
                if let Some(stem) = name.strip_suffix(suffix)
                    && let Ok(b) = stem.parse::<i64>()
                    && !bases.contains(&b)
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let interval = config.index_interval_bytes.max(0) as u64;
        let mut segments = BTreeMap::new();
        let mut outcomes = Vec::new();
        let recover_from = bases
            .iter()
            .rev()
            .find(|b| **b <= checkpoints.recovery_point)
            .copied()
            .unwrap_or(i64::MIN);
        let mut cut = false;
        for base in bases {
            if cut {
                // Everything after a truncated segment is unreachable: drop it.
                let (seg, _) = Segment::open(dir, base, false, interval, now_ms)?;
                seg.delete()?;
                continue;
            }
            let recover = !clean && base >= recover_from;
            let (seg, outcome) = Segment::open(dir, base, recover, interval, now_ms)?;
            if outcome.truncated_bytes > 0 {
                cut = true;
            }
            if let Some(prev) = segments.values().last().map(|s: &Segment| s.next_offset())
                && seg.base_offset < prev
            {
                seg.delete()?;
                continue;
            }
            outcomes.push(outcome);
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let base = checkpoints.log_start_offset.max(0);
            segments.insert(base, Segment::create(dir, base, now_ms)?);
        }
        if let Some(active) = segments.values_mut().last() {
            active.make_active()?;
        }
        let mut log = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: 0,
            recovery_point: 0,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            pending_flush: Vec::new(),
            leader_epoch: 0,
            producers: ProducerState::new(),
            // Recovery may have rewritten indexes and truncated files.
            dirty: !clean,
            first_dirty: 0,
            delete_horizon_ms: None,
            txn_index_stale: false,
        };
        let first_base = log.segments.keys().next().copied().unwrap_or(0);
        let end = log.log_end_offset();
        log.log_start_offset = checkpoints.log_start_offset.max(first_base).min(end);
        log.recovery_point = checkpoints.recovery_point.min(end);
        if clean {
            log.recovery_point = end;
        }
        log.load_producer_state(clean, snapshots)?;
        Ok((log, outcomes))
    }

    fn snapshot_path(&self, offset: i64) -> PathBuf {
        self.dir.join(segment::file_name(offset, ".snapshot"))
    }

    fn txn_index_path(&self, base: i64) -> PathBuf {
        self.dir.join(segment::file_name(base, ".txnindex"))
    }

    /// Rebuilds the producer state: after a clean shutdown from the snapshot written at
    /// the log end and the `.txnindex` files; otherwise by replaying every batch header
    /// (and rewriting the `.txnindex` files from what the log really holds).
    fn load_producer_state(
        &mut self,
        clean: bool,
        snapshots: Vec<(i64, PathBuf)>,
    ) -> Result<(), LogError> {
        let end = self.log_end_offset();
        let from_snapshot = if clean {
            snapshots
                .iter()
                .find(|(o, _)| *o == end)
                .and_then(|(_, p)| std::fs::read(p).ok())
                .and_then(|b| ProducerState::from_snapshot(&b))
        } else {
            None
        };
        match from_snapshot {
            Some(mut st) => {
                let mut aborted = Vec::new();
                for base in self.segment_bases() {
                    if let Ok(b) = std::fs::read(self.txn_index_path(base)) {
                        aborted.extend(AbortedTxn::decode_all(&b));
                    }
                }
                aborted.retain(|a| a.last_offset < end);
                st.set_aborted(aborted);
                self.producers = st;
            }
            None => self.replay_producer_state()?,
        }
        self.producers.prune_below(self.log_start_offset);
        // A snapshot is only trusted right after the clean shutdown that wrote it.
        for (_, p) in snapshots {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    fn replay_producer_state(&mut self) -> Result<(), LogError> {
        let mut st = ProducerState::new();
        let mut by_segment: BTreeMap<i64, Vec<AbortedTxn>> = BTreeMap::new();
        for (base, seg) in &self.segments {
            let mut pos = 0u64;
            while let Some(h) = seg.header_at(pos)? {
                if h.batch_length <= 0 {
                    break;
                }
                if h.producer_id >= 0 {
                    if h.is_control() {
                        let avail = (seg.size() - pos) as usize;
                        // The record's timestamp delta takes up to 10 bytes once the cleaner
                        // gave the batch a delete horizon.
                        let n = h.total_size().min(avail).saturating_sub(HEADER_LEN).min(32);
                        let rec = seg.read_exact(pos + HEADER_LEN as u64, n)?;
                        if let Some(t) = batch::control_type(&rec) {
                            let commit = t == batch::MARKER_COMMIT;
                            if let Some(a) = st.complete_txn(
                                h.producer_id,
                                h.producer_epoch,
                                commit,
                                h.base_offset,
                                -1,
                                h.max_timestamp,
                            ) {
                                by_segment.entry(*base).or_default().push(a);
                            }
                        }
                    } else {
                        st.apply(&h);
                    }
                }
                pos += h.total_size() as u64;
            }
        }
        for base in self.segment_bases() {
            let path = self.txn_index_path(base);
            match by_segment.get(&base) {
                Some(list) => std::fs::write(&path, AbortedTxn::encode_all(list))?,
                None => match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
        st.set_aborted(by_segment.into_values().flatten().collect());
        self.producers = st;
        Ok(())
    }

    /// Writes the producer snapshot at the log end (clean shutdown). Not fsynced: a
    /// snapshot lost or torn by a power failure fails its CRC and the state is rebuilt
    /// from the log instead, so durability is not needed and 1,000 partitions do not cost
    /// 2,000 fsyncs at shutdown.
    pub fn write_producer_snapshot(&self) -> Result<(), LogError> {
        let path = self.snapshot_path(self.log_end_offset());
        if self.txn_index_stale {
            // Not even an older snapshot at this offset may be trusted.
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            };
        }
        let tmp = path.with_extension("snapshot.tmp");
        std::fs::write(&tmp, self.producers.snapshot())?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The partition's producer state.
    pub fn producer_state(&self) -> &ProducerState {
        &self.producers
    }

    /// Drops producers idle longer than `producer.id.expiration.ms`.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    /// The last stable offset: the high watermark, held back by the oldest open
    /// transaction.
    pub fn last_stable_offset(&self) -> i64 {
        self.producers.last_stable_offset(self.log_end_offset())
    }

    /// Appends a COMMIT or ABORT marker for `producer_id`, closing its transaction on this
    /// partition. Returns the marker's offset.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        self.producers.check_marker(producer_id, producer_epoch)?;
        let bytes = batch::control_batch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms,
        );
        let header = BatchHeader::parse(&bytes)?;
        let payload = Bytes::from(bytes);
        let info =
            self.append_unchecked(&payload, &[ValidatedBatch { header, start: 0 }], now_ms)?;
        let offset = info.first_offset;
        if let Some(a) = self.producers.complete_txn(
            producer_id,
            producer_epoch,
            commit,
            offset,
            coordinator_epoch,
            now_ms,
        ) {
            let mut buf = bytes::BytesMut::new();
            a.encode(&mut buf);
            let base = self.active().base_offset;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.txn_index_path(base))?;
            io::Write::write_all(&mut f, &buf)?;
        }
        Ok(offset)
    }

    /// Aborted transactions a `read_committed` fetch from `from` up to `to` must skip.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.producers.aborted_between(from, to)
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .last()
            .expect("a log always has an active segment")
    }

    /// Directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The effective topic config.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Replaces the config (dynamic topic config change).
    pub fn set_config(&mut self, config: TopicConfig) {
        self.config = config;
    }

    /// Offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// First offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Everything below is fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size()).sum()
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    /// Appends validated batches from `payload`, assigning offsets, after checking them
    /// against the producer state: a retried batch gets its original offsets back and is
    /// not written again; a gap in sequence or a fenced epoch is refused.
    pub fn append(
        &mut self,
        payload: &Bytes,
        batches: &[ValidatedBatch],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        if batches.iter().any(|b| b.header.producer_id >= 0) {
            let headers: Vec<BatchHeader> = batches.iter().map(|b| b.header).collect();
            if let Check::Duplicate(meta) = self.producers.check(&headers)? {
                return Ok(AppendInfo {
                    first_offset: meta.first_offset,
                    last_offset: meta.last_offset,
                    log_append_time: -1,
                    duplicate: true,
                });
            }
        }
        self.append_unchecked(payload, batches, now_ms)
    }

    /// Appends without the producer-state check (markers, coordinator writes).
    pub fn append_unchecked(
        &mut self,
        payload: &Bytes,
        batches: &[ValidatedBatch],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let first_offset = self.log_end_offset();
        let log_append = self.config.message_timestamp_type == TimestampType::LogAppendTime;
        let total_records: i64 = batches
            .iter()
            .map(|b| b.header.last_offset_delta as i64 + 1)
            .sum();
        self.maybe_roll(payload.len() as u64, total_records, now_ms)?;
        let interval = self.config.index_interval_bytes.max(0) as u64;
        if !log_append {
            // Only baseOffset and partitionLeaderEpoch change (outside the CRC): write a
            // patched 16-byte prefix and the rest of each batch straight from the request,
            // with one pwritev, instead of copying the payload.
            let mut prefixes: Vec<[u8; 16]> = Vec::with_capacity(batches.len());
            let mut headers: Vec<BatchHeader> = Vec::with_capacity(batches.len());
            let mut next = first_offset;
            for vb in batches {
                let mut prefix = [0u8; 16];
                prefix.copy_from_slice(&payload[vb.start..vb.start + 16]);
                batch::patch_offsets(&mut prefix, next, self.leader_epoch);
                prefixes.push(prefix);
                let mut h = vb.header;
                h.base_offset = next;
                h.partition_leader_epoch = self.leader_epoch;
                next = h.last_offset() + 1;
                headers.push(h);
            }
            let mut parts: Vec<&[u8]> = Vec::with_capacity(batches.len() * 2);
            for (vb, prefix) in batches.iter().zip(&prefixes) {
                parts.push(prefix);
                parts.push(&payload[vb.start + 16..vb.start + vb.header.total_size()]);
            }
            self.active_mut().append_parts(&parts, &headers, interval)?;
            return Ok(self.appended(first_offset, next, total_records, &headers, -1));
        }
        let mut buf = payload.to_vec();
        let mut headers: Vec<BatchHeader> = Vec::with_capacity(batches.len());
        let mut next = first_offset;
        for vb in batches {
            let size = vb.header.total_size();
            let slice = &mut buf[vb.start..vb.start + size];
            batch::patch_offsets(slice, next, self.leader_epoch);
            if log_append {
                batch::stamp_log_append_time(slice, now_ms);
            }
            let mut h = vb.header;
            h.base_offset = next;
            h.partition_leader_epoch = self.leader_epoch;
            if log_append {
                h.max_timestamp = now_ms;
                h.attributes |= 0x08;
                h.crc = batch::crc_of(slice);
            }
            next = h.last_offset() + 1;
            headers.push(h);
        }
        self.active_mut().append(&buf, &headers, interval)?;
        Ok(self.appended(first_offset, next, total_records, &headers, now_ms))
    }

    /// Bookkeeping after batches reached the active segment.
    fn appended(
        &mut self,
        first_offset: i64,
        next: i64,
        records: i64,
        headers: &[BatchHeader],
        log_append_time: i64,
    ) -> AppendInfo {
        self.unflushed_messages += records;
        self.dirty = true;
        for h in headers.iter().filter(|h| !h.is_control()) {
            self.producers.apply(h);
        }
        AppendInfo {
            first_offset,
            last_offset: next - 1,
            log_append_time,
            duplicate: false,
        }
    }

    fn maybe_roll(&mut self, incoming: u64, records: i64, now_ms: i64) -> Result<(), LogError> {
        let cfg_bytes = self.config.segment_bytes.max(1) as u64;
        let seg_ms = self.config.segment_ms;
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let full = active.size() + incoming > cfg_bytes;
        let old = now_ms - active.created_ms >= seg_ms;
        let offset_overflow =
            self.log_end_offset() + records - active.base_offset > i32::MAX as i64;
        if full || old || offset_overflow {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Starts a new active segment at the log end offset.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let base = self.log_end_offset();
        if self.active().base_offset == base {
            return Ok(());
        }
        self.dirty = true;
        let dir = self.dir.clone();
        let old = self.active_mut();
        old.close_active()?;
        let file = old.file();
        self.pending_flush.push(file);
        self.segments
            .insert(base, Segment::create(&dir, base, now_ms)?);
        Ok(())
    }

    /// Where to read `offset` from, up to `max_bytes` (at least one whole batch when
    /// `min_one_batch`, as KIP-74 asks for the first partition of a fetch).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>, LogError> {
        self.read_below(offset, max_bytes, min_one_batch, i64::MAX)
    }

    /// As [`Log::read`], returning only batches below `upper` (the last stable offset for
    /// `read_committed` fetches; it always falls on a batch boundary).
    pub fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        upper: i64,
    ) -> Result<Option<ReadSlice>, LogError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        if offset == end || offset >= upper {
            return Ok(None);
        }
        let holding = self.segments.range(..=offset).next_back().into_iter();
        for (_, seg) in holding.chain(self.segments.range(offset.saturating_add(1)..)) {
            let Some(pos) = seg.position_of(offset)? else {
                continue;
            };
            let stop = if upper < seg.next_offset() {
                seg.position_of(upper)?.unwrap_or(seg.size())
            } else {
                seg.size()
            };
            let available = stop.saturating_sub(pos) as usize;
            if available == 0 {
                return Ok(None);
            }
            let mut len = available.min(max_bytes);
            if let Some(h) = seg.header_at(pos)? {
                let first = h.total_size().min(available);
                if len < first {
                    len = if min_one_batch { first } else { 0 };
                }
            }
            if len == 0 {
                return Ok(None);
            }
            return Ok(Some(ReadSlice {
                file: seg.file(),
                position: pos,
                len,
            }));
        }
        Ok(None)
    }

    /// The first record with a timestamp at or after `ts`: (offset, timestamp).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in self.segments.values() {
            if seg.max_timestamp() < ts {
                continue;
            }
            if let Some(found) = seg.find_timestamp(ts, self.log_start_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp: (offset, timestamp).
    pub fn max_timestamp_record(&self) -> Result<Option<(i64, i64)>, LogError> {
        let best = self
            .segments
            .values()
            .filter(|s| s.max_timestamp() >= 0)
            .max_by_key(|s| (s.max_timestamp(), std::cmp::Reverse(s.base_offset)));
        match best {
            Some(s) => Ok(s
                .max_timestamp_record()?
                .filter(|(o, _)| *o >= self.log_start_offset)),
            None => Ok(None),
        }
    }

    /// Moves the log start offset to `offset` (DeleteRecords), dropping whole segments
    /// below it. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let end = self.log_end_offset();
        if offset < 0 || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.drop_segments_below_start()?;
            self.producers.prune_below(self.log_start_offset);
        }
        Ok(self.log_start_offset)
    }

    fn drop_segments_below_start(&mut self) -> Result<usize, LogError> {
        let mut dropped = 0;
        loop {
            let bases = self.segment_bases();
            if bases.len() < 2 {
                break;
            }
            // A segment is wholly below the start when the next one begins at or below it.
            if bases[1] <= self.log_start_offset {
                if let Some(seg) = self.segments.remove(&bases[0]) {
                    seg.delete()?;
                    dropped += 1;
                }
            } else {
                break;
            }
        }
        Ok(dropped)
    }

    /// Applies `retention.ms` and `retention.bytes`, deleting whole segments (the active
    /// one is rolled first when it too has expired). Returns segments deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        if !self
            .config
            .cleanup_policy
            .split(',')
            .any(|p| p.trim() == "delete")
        {
            return Ok(0);
        }
        let mut deleted = 0;
        let retention_ms = self.config.retention_ms;
        if retention_ms >= 0 {
            // A segment the log cleaner emptied has nothing to keep.
            let expired = |s: &Segment| {
                s.is_empty() || s.max_timestamp() >= 0 && now_ms - s.max_timestamp() > retention_ms
            };
            if expired(self.active()) && self.segments.values().all(expired) {
                self.roll(now_ms)?;
            }
            while self.segments.len() > 1 {
                let first = self.segments.values().next().expect("non-empty");
                if !expired(first) {
                    break;
                }
                deleted += self.delete_oldest()?;
            }
        }
        let retention_bytes = self.config.retention_bytes;
        if retention_bytes >= 0 {
            while self.segments.len() > 1 {
                let first_size = self.segments.values().next().map(|s| s.size()).unwrap_or(0);
                if self.size_bytes() - first_size < retention_bytes as u64 {
                    break;
                }
                deleted += self.delete_oldest()?;
            }
        }
        Ok(deleted)
    }

    fn delete_oldest(&mut self) -> Result<usize, LogError> {
        let Some((&base, _)) = self.segments.iter().next() else {
            return Ok(0);
        };
        if let Some(seg) = self.segments.remove(&base) {
            seg.delete()?;
        }
        let new_first = self.segments.keys().next().copied().unwrap_or(base);
        self.log_start_offset = self.log_start_offset.max(new_first);
        self.producers.prune_below(self.log_start_offset);
        Ok(1)
    }

    /// Whether `flush.messages` or `flush.ms` asks for an fsync now.
    pub fn needs_flush(&self, now_ms: i64) -> bool {
        (self.unflushed_messages > 0
            && (self.unflushed_messages >= self.config.flush_messages
                || now_ms - self.last_flush_ms >= self.config.flush_ms))
            || !self.pending_flush.is_empty()
    }

    /// What to fsync to make everything appended so far durable.
    pub fn flush_target(&mut self) -> FlushTarget {
        let mut files = std::mem::take(&mut self.pending_flush);
        files.push(self.active().file());
        FlushTarget {
            files,
            up_to: self.log_end_offset(),
        }
    }

    /// Records that a [`FlushTarget`] was synced.
    pub fn mark_flushed(&mut self, up_to: i64, now_ms: i64) {
        if up_to > self.recovery_point {
            self.recovery_point = up_to;
        }
        let end = self.log_end_offset();
        self.unflushed_messages = if up_to >= end {
            0
        } else {
            self.unflushed_messages
        };
        self.last_flush_ms = now_ms;
    }

    /// fsyncs everything now (shutdown, tests).
    pub fn flush_all(&mut self, now_ms: i64) -> Result<(), LogError> {
        if !self.dirty && self.pending_flush.is_empty() {
            // Nothing written since the last full flush (idle partitions at shutdown).
            let end = self.log_end_offset();
            self.mark_flushed(end, now_ms);
            return Ok(());
        }
        let target = self.flush_target();
        target.sync()?;
        for s in self.segments.values_mut() {
            s.flush()?;
        }
        self.mark_flushed(target.up_to, now_ms);
        self.dirty = false;
        Ok(())
    }

    /// Deletes the whole log directory.
    pub fn delete_all(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
