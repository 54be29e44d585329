//! Sparse indexes beside each segment, in Kafka's file formats.
//!
//! `.index`: 8-byte entries (offset relative to the segment base as u32, file position
//! as u32), where the offset is the *last* offset of the batch starting at that position.
//! `.timeindex`: 12-byte entries (timestamp i64, relative offset u32), timestamps
//! strictly increasing. Both are big-endian, as Kafka writes them.
//!
//! The active segment keeps its entries in memory, and writes the ones added since the
//! last write to the file in one go when it is rolled or the log is flushed at shutdown,
//! not one positioned write per entry on the append path. An index is sparse, so a file short of its last
//! entries (a crash) is still correct, and recovery rebuilds the active segment's
//! indexes anyway. A closed segment keeps only
//! every [`SAMPLE_STRIDE`]th entry in memory, taken at its first lookup: a lookup
//! searches the sample, then reads the one stretch of entries between two samples with a
//! single positioned read (instead of a read per binary-search probe), so memory grows
//! by 1/64 of the index size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Entry width of `.index`.
pub const OFFSET_ENTRY: u64 = 8;
/// Entry width of `.timeindex`.
pub const TIME_ENTRY: u64 = 12;
/// The widest entry.
const MAX_ENTRY: usize = TIME_ENTRY as usize;
/// A closed index keeps every this-many-th entry in memory.
pub const SAMPLE_STRIDE: u64 = 64;

/// A file of fixed-width entries searched by binary search.
#[derive(Debug)]
struct EntryFile {
    path: PathBuf,
    file: File,
    width: u64,
    entries: u64,
    /// Entries in the file; the rest (up to `entries`) are only in `cache` so far.
    written: u64,
    cache: Option<Vec<u8>>,
    /// Every [`SAMPLE_STRIDE`]th entry (0, S, 2S, ...), read at the first lookup while
    /// uncached; emptied by any change to the file.
    sample: std::sync::OnceLock<Vec<u8>>,
}

impl EntryFile {
    fn rename(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_path_buf();
        Ok(())
    }

    fn open(path: &Path, width: u64, truncate: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(path)?;
        let len = file.metadata()?.len();
        // A torn last entry (crash mid-write) is dropped.
        let entries = len / width;
        if len % width != 0 {
            file.set_len(entries * width)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            width,
            entries,
            written: entries,
            cache: None,
            sample: std::sync::OnceLock::new(),
        })
    }

    fn set_cached(&mut self, cached: bool) -> io::Result<()> {
        self.sample = std::sync::OnceLock::new();
        if cached {
            if self.cache.is_some() {
                return Ok(()); // already in memory, maybe ahead of the file
            }
            self.load_cache()
        } else {
            // Entries only in memory go to the file first; if that fails the file is
            // just sparser (entries are hints), and the memory copy goes regardless.
            let written = self.write_tail();
            self.cache = None;
            self.entries = self.written;
            written
        }
    }

    /// Writes the entries not yet in the file, with one positioned write.
    fn write_tail(&mut self) -> io::Result<()> {
        if self.written == self.entries {
            return Ok(());
        }
        let Some(c) = &self.cache else {
            return Err(io::Error::other(format!(
                "{}: entries missing from the file and from memory",
                self.path.display()
            )));
        };
        let w = self.width as usize;
        self.file
            .write_all_at(&c[self.written as usize * w..], self.written * self.width)?;
        self.written = self.entries;
        Ok(())
    }

    fn load_cache(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; (self.entries * self.width) as usize];
        self.file.read_exact_at(&mut buf, 0)?;
        self.cache = Some(buf);
        Ok(())
    }

    /// Entry `i` in the first `width` bytes of a fixed buffer (no allocation per probe of
    /// a binary search).
    fn entry(&self, i: u64) -> io::Result<[u8; MAX_ENTRY]> {
        let w = self.width as usize;
        let mut buf = [0u8; MAX_ENTRY];
        if let Some(c) = &self.cache {
            buf[..w].copy_from_slice(&c[i as usize * w..(i as usize + 1) * w]);
            return Ok(buf);
        }
        self.file.read_exact_at(&mut buf[..w], i * self.width)?;
        Ok(buf)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.cache {
            // The file gets it at the next flush or when the segment is closed.
            Some(c) => c.extend_from_slice(bytes),
            None => {
                self.file.write_all_at(bytes, self.entries * self.width)?;
                self.written += 1;
            }
        }
        self.entries += 1;
        self.sample = std::sync::OnceLock::new();
        Ok(())
    }

    /// Writes pending entries and fsyncs the file.
    fn flush(&mut self) -> io::Result<()> {
        self.write_tail()?;
        self.file.sync_data()
    }

    /// Index of the last entry whose key (decoded by `key`) is <= `target`.
    fn floor(&self, target: i64, key: impl Fn(&[u8]) -> i64) -> io::Result<Option<u64>> {
        if self.entries == 0 {
            return Ok(None);
        }
        if let Some(c) = &self.cache {
            return Ok(floor_in(c, self.width as usize, target, &key).map(|i| i as u64));
        }
        let w = self.width as usize;
        let sample = match self.sample.get() {
            Some(s) => s,
            None => {
                let s = self.read_sample()?;
                self.sample.get_or_init(|| s)
            }
        };
        // The stretch of entries after the last sample at or below the target holds the
        // answer; it is read with one pread.
        let Some(j) = floor_in(sample, w, target, &key) else {
            return Ok(None);
        };
        let first = j as u64 * SAMPLE_STRIDE;
        let count = SAMPLE_STRIDE.min(self.entries - first) as usize;
        let mut stretch = [0u8; SAMPLE_STRIDE as usize * MAX_ENTRY];
        self.file
            .read_exact_at(&mut stretch[..count * w], first * self.width)?;
        // The stretch starts with the sampled entry, which is <= target.
        let i = floor_in(&stretch[..count * w], w, target, &key).ok_or_else(|| {
            io::Error::other(format!(
                "{}: entries changed under a lookup",
                self.path.display()
            ))
        })?;
        Ok(Some(first + i as u64))
    }

    /// Every [`SAMPLE_STRIDE`]th entry of the file, read in one pass.
    fn read_sample(&self) -> io::Result<Vec<u8>> {
        let w = self.width as usize;
        let mut all = vec![0u8; self.entries as usize * w];
        self.file.read_exact_at(&mut all, 0)?;
        Ok(all
            .chunks(w * SAMPLE_STRIDE as usize)
            .flat_map(|stretch| &stretch[..w])
            .copied()
            .collect())
    }

    /// Keeps the first `keep` entries.
    fn truncate(&mut self, keep: u64) -> io::Result<()> {
        self.written = self.written.min(keep);
        self.file.set_len(self.written * self.width)?;
        self.entries = keep;
        self.sample = std::sync::OnceLock::new();
        if let Some(c) = &mut self.cache {
            c.truncate((keep * self.width) as usize);
        }
        Ok(())
    }
}

/// Binary search in packed entries of width `w`: the index of the last entry whose key
/// is <= `target`.
fn floor_in(entries: &[u8], w: usize, target: i64, key: impl Fn(&[u8]) -> i64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, entries.len() / w);
    // invariant: entries [0, lo) have key <= target; [hi, n) have key > target
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(&entries[mid * w..(mid + 1) * w]) <= target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// `.index`: relative offset → file position.
#[derive(Debug)]
pub struct OffsetIndex {
    base_offset: i64,
    inner: EntryFile,
}

impl OffsetIndex {
    /// Opens (or creates) the index; `truncate` starts it empty (for a rebuild).
    pub fn open(path: &Path, base_offset: i64, truncate: bool) -> io::Result<Self> {
        Ok(Self {
            base_offset,
            inner: EntryFile::open(path, OFFSET_ENTRY, truncate)?,
        })
    }

    /// Keeps entries in memory too (the active segment).
    pub fn cache(&mut self) -> io::Result<()> {
        self.inner.set_cached(true)
    }

    /// Writes the entries kept only in memory and drops the in-memory copy (the segment
    /// stopped being active). On an error the file keeps the entries written before.
    pub fn uncache(&mut self) -> io::Result<()> {
        self.inner.set_cached(false)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.inner.entries
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.inner.entries == 0
    }

    /// Adds an entry for the batch at `position` whose last offset is `offset`.
    pub fn append(&mut self, offset: i64, position: u64) -> io::Result<()> {
        let mut e = [0u8; 8];
        e[0..4].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        e[4..8].copy_from_slice(&(position as u32).to_be_bytes());
        self.inner.append(&e)
    }

    fn decode(e: &[u8]) -> (u32, u32) {
        (
            u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
        )
    }

    /// The entry `i` as (absolute offset, position).
    pub fn entry(&self, i: u64) -> io::Result<(i64, u64)> {
        let (rel, pos) = Self::decode(&self.inner.entry(i)?);
        Ok((self.base_offset + rel as i64, pos as u64))
    }

    /// The position to start scanning from to find `offset`: the position of the last
    /// indexed batch that ends at or before `offset`, or 0.
    pub fn lookup(&self, offset: i64) -> io::Result<u64> {
        let target = offset - self.base_offset;
        let found = self.inner.floor(target, |e| Self::decode(e).0 as i64)?;
        match found {
            Some(i) => Ok(self.entry(i)?.1),
            None => Ok(0),
        }
    }

    /// The last entry, if any.
    pub fn last(&self) -> io::Result<Option<(i64, u64)>> {
        if self.inner.entries == 0 {
            return Ok(None);
        }
        self.entry(self.inner.entries - 1).map(Some)
    }

    /// Removes every entry.
    pub fn reset(&mut self) -> io::Result<()> {
        self.inner.truncate(0)
    }

    /// Drops entries pointing at or past `position` (after a log truncation).
    pub fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let mut keep = self.inner.entries;
        while keep > 0 && self.entry(keep - 1)?.1 >= position {
            keep -= 1;
        }
        self.inner.truncate(keep)
    }

    /// Writes entries kept only in memory and fsyncs the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Renames the file (the log cleaner installing a cleaned segment).
    pub fn rename(&mut self, to: &Path) -> io::Result<()> {
        self.inner.rename(to)
    }
}

/// `.timeindex`: timestamp → relative offset, timestamps increasing.
#[derive(Debug)]
pub struct TimeIndex {
    base_offset: i64,
    inner: EntryFile,
    last: Option<(i64, i64)>,
}

impl TimeIndex {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Renames the file (the log cleaner installing a cleaned segment).
    pub fn rename(&mut self, to: &Path) -> io::Result<()> {
        self.inner.rename(to)
    }

    /// Opens (or creates) the time index.
    pub fn open(path: &Path, base_offset: i64, truncate: bool) -> io::Result<Self> {
        let inner = EntryFile::open(path, TIME_ENTRY, truncate)?;
        let mut t = Self {
            base_offset,
            inner,
            last: None,
        };
        if t.inner.entries > 0 {
            t.last = Some(t.entry(t.inner.entries - 1)?);
        }
        Ok(t)
    }

    fn decode(&self, e: &[u8]) -> (i64, i64) {
        let ts = i64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        let rel = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
        (ts, self.base_offset + rel as i64)
    }

    /// Entry `i` as (timestamp, absolute offset).
    pub fn entry(&self, i: u64) -> io::Result<(i64, i64)> {
        let e = self.inner.entry(i)?;
        Ok(self.decode(&e))
    }

    /// Keeps entries in memory too (the active segment).
    pub fn cache(&mut self) -> io::Result<()> {
        self.inner.set_cached(true)
    }

    /// Writes the entries kept only in memory and drops the in-memory copy. On an error
    /// the file keeps the entries written before.
    pub fn uncache(&mut self) -> io::Result<()> {
        let res = self.inner.set_cached(false);
        if res.is_err() {
            let n = self.inner.entries;
            self.last = if n > 0 { self.entry(n - 1).ok() } else { None };
        }
        res
    }

    /// The last entry (timestamp, offset).
    pub fn last(&self) -> Option<(i64, i64)> {
        self.last
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.inner.entries
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.inner.entries == 0
    }

    /// Appends an entry if `timestamp` is larger than the last one.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> io::Result<()> {
        if let Some((ts, off)) = self.last
            && (timestamp <= ts || offset < off)
        {
            return Ok(());
        }
        let mut e = [0u8; 12];
        e[0..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..12].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        self.inner.append(&e)?;
        self.last = Some((timestamp, offset));
        Ok(())
    }

    /// The offset to start a search for `timestamp` from: the offset of the last entry
    /// with a smaller-or-equal timestamp, or the segment base.
    pub fn lookup(&self, timestamp: i64) -> io::Result<i64> {
        let base = self.base_offset;
        let found = self.inner.floor(timestamp, |e| {
            i64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]])
        })?;
        match found {
            Some(i) => Ok(self.entry(i)?.1),
            None => Ok(base),
        }
    }

    /// Removes every entry.
    pub fn reset(&mut self) -> io::Result<()> {
        self.last = None;
        self.inner.truncate(0)
    }

    /// Writes entries kept only in memory and fsyncs the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// Drops entries whose offset is at or past `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) -> io::Result<()> {
        let mut keep = self.inner.entries;
        while keep > 0 && self.entry(keep - 1)?.1 >= offset {
            keep -= 1;
        }
        self.inner.truncate(keep)?;
        self.last = if keep > 0 {
            Some(self.entry(keep - 1)?)
        } else {
            None
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_finds_floor_entry_cached_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let mut idx = OffsetIndex::open(&p, 100, true).unwrap();
        idx.cache().unwrap();
        for (i, off) in [105i64, 110, 120].iter().enumerate() {
            idx.append(*off, (i as u64 + 1) * 4096).unwrap();
        }
        idx.flush().unwrap();
        for cached in [true, false] {
            if !cached {
                idx = OffsetIndex::open(&p, 100, false).unwrap();
            }
            assert_eq!(idx.lookup(100).unwrap(), 0);
            assert_eq!(idx.lookup(105).unwrap(), 4096);
            assert_eq!(idx.lookup(119).unwrap(), 8192);
            assert_eq!(idx.lookup(500).unwrap(), 12288);
        }
        idx.truncate_to_position(8192).unwrap();
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn time_index_only_grows_and_finds_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TimeIndex::open(&dir.path().join("0.timeindex"), 0, true).unwrap();
        t.maybe_append(10, 1).unwrap();
        t.maybe_append(5, 2).unwrap(); // not larger: ignored
        t.maybe_append(20, 3).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(9).unwrap(), 0);
        assert_eq!(t.lookup(15).unwrap(), 1);
        assert_eq!(t.lookup(25).unwrap(), 3);
        let reopened = TimeIndex::open(&dir.path().join("0.timeindex"), 0, false).unwrap();
        assert_eq!(reopened.last(), Some((20, 3)));
    }

    #[test]
    fn the_active_index_writes_its_entries_at_flush_and_close_not_at_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let len = || std::fs::metadata(&p).unwrap().len();
        let mut idx = OffsetIndex::open(&p, 0, true).unwrap();
        idx.cache().unwrap();
        idx.append(3, 100).unwrap();
        idx.append(7, 200).unwrap();
        assert_eq!(len(), 0, "appends stay in memory");
        assert_eq!(idx.lookup(5).unwrap(), 100);
        idx.flush().unwrap();
        assert_eq!(len(), 16);
        idx.append(9, 300).unwrap();
        assert_eq!(len(), 16);
        // A truncation below what the file holds cuts the file too.
        idx.truncate_to_position(200).unwrap();
        assert_eq!((idx.len(), len()), (1, 8));
        idx.append(8, 250).unwrap();
        idx.uncache().unwrap();
        assert_eq!(len(), 16, "closing writes the rest");
        let reopened = OffsetIndex::open(&p, 0, false).unwrap();
        assert_eq!(reopened.last().unwrap(), Some((8, 250)));
        assert_eq!(reopened.lookup(100).unwrap(), 250);
        // A closed index writes each entry at once (recovery rebuilds use that).
        idx.append(12, 400).unwrap();
        assert_eq!(len(), 24);

        let tp = dir.path().join("0.timeindex");
        let mut t = TimeIndex::open(&tp, 0, true).unwrap();
        t.cache().unwrap();
        t.maybe_append(10, 1).unwrap();
        t.maybe_append(20, 3).unwrap();
        assert_eq!(std::fs::metadata(&tp).unwrap().len(), 0);
        t.uncache().unwrap();
        assert_eq!(std::fs::metadata(&tp).unwrap().len(), 24);
        let reopened = TimeIndex::open(&tp, 0, false).unwrap();
        assert_eq!(reopened.last(), Some((20, 3)));
    }

    #[test]
    fn a_torn_index_entry_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        std::fs::write(&p, [0u8; 13]).unwrap();
        let idx = OffsetIndex::open(&p, 0, false).unwrap();
        assert_eq!(idx.len(), 1);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 8);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A closed index (sampled, one read per lookup) and the active one (in memory)
        /// answer every lookup as a scan of all entries would, across stride boundaries
        /// and after truncation.
        #[test]
        fn sampled_and_cached_lookups_agree_with_a_scan(
            gaps in proptest::collection::vec(1i64..50, 0..300),
            probes in proptest::collection::vec(0i64..20_000, 1..40),
            keep in 0usize..300,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("0.index");
            let base = 1_000;
            let mut idx = OffsetIndex::open(&p, base, true).unwrap();
            idx.cache().unwrap();
            let mut entries = Vec::new();
            let mut off = base;
            for (i, g) in gaps.iter().enumerate() {
                off += g;
                let pos = (i as u64 + 1) * 100;
                idx.append(off, pos).unwrap();
                entries.push((off, pos));
            }
            let scan = |entries: &[(i64, u64)], o: i64| {
                entries.iter().take_while(|(e, _)| *e <= o).last().map_or(0, |e| e.1)
            };
            idx.flush().unwrap();
            let mut closed = OffsetIndex::open(&p, base, false).unwrap();
            for &probe in &probes {
                let o = base + probe / 10;
                proptest::prop_assert_eq!(idx.lookup(o).unwrap(), scan(&entries, o), "cached, offset {}", o);
                proptest::prop_assert_eq!(closed.lookup(o).unwrap(), scan(&entries, o), "closed, offset {}", o);
            }
            let keep = keep.min(entries.len());
            let cut = entries.get(keep).map_or(u64::MAX, |e| e.1);
            entries.truncate(keep);
            closed.truncate_to_position(cut).unwrap();
            closed.uncache().unwrap();
            for &probe in &probes {
                let o = base + probe / 10;
                proptest::prop_assert_eq!(closed.lookup(o).unwrap(), scan(&entries, o), "truncated, offset {}", o);
            }
        }
    }
}
