//! The log cleaner: compaction of logs with `cleanup.policy=compact`.
//!
//! As in Kafka, a pass over one log has three steps. Under the log's lock,
//! [`Log::cleaning_plan`] picks the rolled segments that may be cleaned: the active
//! segment, segments at or past the last stable offset, segments not yet fsynced and
//! segments younger than `min.compaction.lag.ms` are not, and nothing happens until the dirty share of the
//! cleanable bytes reaches `min.cleanable.dirty.ratio` (or `max.compaction.lag.ms`
//! passed). Without the lock, [`build_offset_map`] reads the dirty segments (those
//! written since the last pass) into a map from key to the offset of its last record,
//! and [`write_group`] copies groups of segments into new `.cleaned` files keeping only:
//! - records whose key has no later record in the map,
//! - tombstones (null values), until `delete.retention.ms` after the pass that first
//!   kept them: as Kafka does since KIP-534, that pass writes the time in the batch's
//!   base timestamp and sets its delete-horizon attribute, re-encoding the records'
//!   timestamp deltas so that their timestamps stay the same,
//! - no record of an aborted transaction; transaction markers until
//!   `delete.retention.ms` after the first pass that found no data of their transaction
//!   left (the same delete horizon as tombstones); an abort marker takes its entry in
//!   the aborted-transaction index (`.txnindex`) with it,
//! - for a batch that loses every record, an empty batch if it is its producer's last
//!   (the producer's sequence survives a restart that rebuilds state from the log), or
//!   if it is the group's last (an empty batch of no producer: the copy ends where the
//!   group did, which is how opening the log after a crash tells the copy's old
//!   segments from the ones after it).
//!
//! Records keep their offsets: a batch keeps its base offset and last offset delta and
//! loses records from the middle. Under the lock again, [`Log::install_cleaned`] swaps
//! a group for its cleaned copy if the group's segments are still the log's.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::producer_state::AbortedTxn;
use super::segment::Segment;
use super::{Log, LogError};

/// A rolled segment as the plan saw it.
#[derive(Debug, Clone)]
pub struct SourceSegment {
    /// Base offset.
    pub base: i64,
    file: Arc<File>,
    size: u64,
    next_offset: i64,
}

impl SourceSegment {
    /// The max timestamp of the segment's first batch, when it has one (Kafka's
    /// `getFirstBatchTimestamp`, which `max.compaction.lag.ms` is measured from).
    fn first_batch_timestamp(&self) -> Option<i64> {
        let mut b = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut b, 0).ok()?;
        let h = BatchHeader::parse(&b).ok()?;
        (h.max_timestamp > 0).then_some(h.max_timestamp)
    }
}

/// What one pass over a log will clean.
#[derive(Debug)]
pub struct CleaningPlan {
    dir: PathBuf,
    /// Rolled segments below `first_uncleanable`, oldest first.
    segments: Vec<SourceSegment>,
    /// Offsets from here on were written since the last pass.
    pub first_dirty: i64,
    /// Nothing at or past this offset is cleaned.
    pub first_uncleanable: i64,
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// Producer id → last offset of its last batch.
    producer_last: HashMap<i64, i64>,
    /// Producer id → epoch, for producers with no batch of their current epoch in the
    /// log: a marker of that epoch (transactions v2 bump it at every commit) is then the
    /// only record of it that a restart can rebuild the producer's state from.
    marker_epochs: HashMap<i64, i16>,
    /// Whether [`build_offset_map`] ended the pass early.
    pub cut: bool,
    /// Producer id → whether the pass kept a data batch of the transaction it is in at
    /// the point the pass has reached (the groups are written in order).
    txn_kept_data: HashMap<i64, bool>,
    /// The pass's clock.
    now_ms: i64,
    /// The delete horizon given to batches whose tombstones this pass keeps first.
    delete_horizon_ms: i64,
    index_interval: u64,
    segment_bytes: u64,
}

impl CleaningPlan {
    /// Bytes of the segments the pass reads.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    fn aborted(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && self.aborted.get(&h.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|(first, last)| *first <= h.base_offset && h.last_offset() <= *last)
            })
    }

    /// The segments in groups to be rewritten as one each: consecutive, together at most
    /// `segment.bytes` and spanning at most 2^31 offsets (the index holds 32-bit deltas).
    pub fn groups(&self) -> Vec<Vec<SourceSegment>> {
        let mut out: Vec<Vec<SourceSegment>> = Vec::new();
        for s in &self.segments {
            if let Some(g) = out.last_mut() {
                let size: u64 = g.iter().map(|x| x.size).sum();
                if size + s.size <= self.segment_bytes
                    && s.next_offset - g[0].base <= i32::MAX as i64
                {
                    g.push(s.clone());
                    continue;
                }
            }
            out.push(vec![s.clone()]);
        }
        out
    }
}

/// Key → offset of the key's last record in the dirty segments.
///
/// As Kafka's cleaner holds an MD5 digest of each key, the map holds a 128-bit digest:
/// two SipHash-1-3 hashes under keys drawn at random for each map, so about 32 bytes a
/// key whatever its length, and no allocation per key. Two keys that share a digest would
/// let a record of one supersede the other's; for a pass over `n` keys the odds are about
/// n²/2¹²⁹ (for a billion keys, 10⁻²¹), and the random keys leave producers no way to
/// aim for one.
#[derive(Debug, Default)]
pub struct OffsetMap {
    latest: HashMap<u128, i64, PreHashed>,
    seeds: (RandomState, RandomState),
    bytes: usize,
}

/// Bytes the map counts per key: the entry (16 + 8) and the table's share around it.
const MAP_ENTRY_BYTES: usize = 32;

impl OffsetMap {
    /// Keys held.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    fn digest(&self, key: &[u8]) -> u128 {
        ((self.seeds.0.hash_one(key) as u128) << 64) | self.seeds.1.hash_one(key) as u128
    }

    fn insert(&mut self, key: &[u8], offset: i64) {
        let d = self.digest(key);
        if self.latest.insert(d, offset).is_none() {
            self.bytes += MAP_ENTRY_BYTES;
        }
    }

    /// The offset of the last record of `key` the map saw.
    fn get(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(&self.digest(key)).copied()
    }
}

/// The map's keys are digests already: their low 64 bits are the table's hash.
#[derive(Debug, Default, Clone, Copy)]
struct PreHashed;

impl BuildHasher for PreHashed {
    type Hasher = LowBits;

    fn build_hasher(&self) -> LowBits {
        LowBits(0)
    }
}

struct LowBits(u64);

impl Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128`s are hashed here; any other input still gets a usable hash.
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// Reads a segment's batches in order, a chunk at a time.
struct Batches<'a> {
    seg: &'a SourceSegment,
    pos: u64,
    chunk: Bytes,
    chunk_pos: u64,
}

const CHUNK: usize = 1 << 20;

impl<'a> Batches<'a> {
    fn new(seg: &'a SourceSegment) -> Self {
        Self {
            seg,
            pos: 0,
            chunk: Bytes::new(),
            chunk_pos: 0,
        }
    }

    fn read(&mut self, len: usize) -> io::Result<()> {
        let len = len.min((self.seg.size - self.pos) as usize);
        let mut buf = vec![0u8; len];
        self.seg.file.read_exact_at(&mut buf, self.pos)?;
        self.chunk = Bytes::from(buf);
        self.chunk_pos = self.pos;
        Ok(())
    }

    /// The next whole batch, checked (CRC included), or `None` at the end. A rolled
    /// segment holds only whole batches; anything else is an error, and the pass stops
    /// without writing a copy that would lose what follows the damage.
    fn next_batch(&mut self) -> Result<Option<(BatchHeader, Bytes)>, LogError> {
        if self.pos == self.seg.size {
            return Ok(None);
        }
        let (base, pos) = (self.seg.base, self.pos);
        let corrupt = move |what: String| {
            LogError::Batch(batch::BatchError::Corrupt(format!(
                "segment {base} at byte {pos}: {what}"
            )))
        };
        if self.pos + HEADER_LEN as u64 > self.seg.size {
            return Err(corrupt(format!(
                "{} trailing bytes are not a batch",
                self.seg.size - self.pos
            )));
        }
        let mut at = (self.pos - self.chunk_pos) as usize;
        if self.pos < self.chunk_pos || at + HEADER_LEN > self.chunk.len() {
            self.read(CHUNK)?;
            at = 0;
        }
        let h = BatchHeader::parse(&self.chunk[at..])?;
        let total = h.total_size();
        if h.batch_length < (HEADER_LEN - batch::LOG_OVERHEAD) as i32
            || self.pos + total as u64 > self.seg.size
        {
            return Err(corrupt(format!(
                "batch length {} does not fit the segment",
                h.batch_length
            )));
        }
        if at + total > self.chunk.len() {
            self.read(CHUNK.max(total))?;
            at = 0;
        }
        let bytes = self.chunk.slice(at..at + total);
        batch::check_batch(&bytes).map_err(|e| corrupt(e.to_string()))?;
        self.pos += total as u64;
        Ok(Some((h, bytes)))
    }
}

impl Log {
    /// What a cleaner pass over this log would clean now, or `None` when the log is not
    /// compacted or not dirty enough.
    pub fn cleaning_plan(&self, now_ms: i64) -> Option<CleaningPlan> {
        let cfg = &self.config;
        if !cfg.compacted() {
            return None;
        }
        let lso = self.last_stable_offset();
        let lag_passed = |s: &Segment| {
            s.max_timestamp() < 0
                || now_ms.saturating_sub(s.max_timestamp()) >= cfg.min_compaction_lag_ms
        };
        let rolled = self.segments.len().saturating_sub(1);
        let mut segments = Vec::new();
        let mut first_uncleanable = None;
        for (i, (base, seg)) in self.segments.iter().enumerate() {
            // Only what is on disk for good: a copy that drops a record because a later
            // one supersedes it must not outlive that later record in a power failure.
            if i >= rolled || seg.next_offset() > lso.min(self.recovery_point) || !lag_passed(seg) {
                first_uncleanable = Some(*base);
                break;
            }
            segments.push(SourceSegment {
                base: *base,
                file: seg.file(),
                size: seg.size(),
                next_offset: seg.next_offset(),
            });
        }
        let first_uncleanable = first_uncleanable?;
        let first = segments.first()?.base;
        let first_dirty = self.first_dirty;
        // A segment is clean when all of it is below the first dirty offset.
        let is_dirty = |s: &SourceSegment| s.next_offset > first_dirty;
        let (clean, dirty) = segments.iter().fold((0u64, 0u64), |(c, d), s| {
            if is_dirty(s) {
                (c, d + s.size)
            } else {
                (c + s.size, d)
            }
        });
        // Tombstones and markers past their delete horizon make a log worth a pass even
        // when nothing was written since the last one.
        let horizon_passed = self.delete_horizon_ms.is_some_and(|h| h <= now_ms);
        if dirty == 0 && !horizon_passed {
            return None;
        }
        let ratio = dirty as f64 / (clean + dirty).max(1) as f64;
        // As in Kafka, a dirty segment is overdue once `max.compaction.lag.ms` passed
        // since its first batch's timestamp (a batch's read under the lock, only when
        // the lag is set and the ratio alone would not clean).
        let overdue = || {
            segments
                .iter()
                .filter(|s| is_dirty(s))
                .filter_map(|s| s.first_batch_timestamp())
                .min()
                .is_some_and(|t| now_ms.saturating_sub(t) >= cfg.max_compaction_lag_ms)
        };
        let overdue = ratio < cfg.min_cleanable_dirty_ratio
            && cfg.max_compaction_lag_ms < i64::MAX
            && overdue();
        if ratio < cfg.min_cleanable_dirty_ratio && !overdue && !horizon_passed {
            return None;
        }
        let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for a in self.aborted_between(first, first_uncleanable) {
            aborted
                .entry(a.producer_id)
                .or_default()
                .push((a.first_offset, a.last_offset));
        }
        let producer_last = self
            .producers
            .producers()
            .filter_map(|(pid, e)| e.batches.back().map(|b| (pid, b.last_offset)))
            .collect();
        let marker_epochs = self
            .producers
            .producers()
            .filter(|(_, e)| e.batches.is_empty())
            .map(|(pid, e)| (pid, e.epoch))
            .collect();
        Some(CleaningPlan {
            dir: self.dir.clone(),
            segments,
            first_dirty,
            first_uncleanable,
            aborted,
            producer_last,
            marker_epochs,
            txn_kept_data: HashMap::new(),
            cut: false,
            now_ms,
            delete_horizon_ms: now_ms.saturating_add(cfg.delete_retention_ms),
            index_interval: cfg.index_interval_bytes.max(0) as u64,
            segment_bytes: cfg.segment_bytes.max(1) as u64,
        })
    }

    /// Replaces `group` (segments of a [`CleaningPlan`]) by `cleaned`, made by
    /// [`write_group`], whose pass dropped the abort markers `dropped_aborts` (producer
    /// id, offset). Returns false, and deletes `cleaned`, if the log changed under the
    /// cleaner: a segment of the group was deleted (retention, DeleteRecords) or replaced.
    pub fn install_cleaned(
        &mut self,
        group: &[SourceSegment],
        mut cleaned: Segment,
        dropped_aborts: &[(i64, i64)],
    ) -> Result<bool, LogError> {
        let active = self.active().base_offset;
        let unchanged = group.iter().all(|s| {
            s.base != active
                && self
                    .segments
                    .get(&s.base)
                    .is_some_and(|seg| Arc::ptr_eq(&seg.file(), &s.file))
        });
        if !unchanged || group.is_empty() {
            cleaned.discard_cleaned()?;
            return Ok(false);
        }
        let base = group[0].base;
        // The aborted transactions of every segment of the group, but those whose marker
        // went, move to the one left: a clean start reads them from the `.txnindex` files.
        let mut txn = Vec::new();
        for s in group {
            match std::fs::read(self.txn_index_path(s.base)) {
                Ok(b) => txn.extend(AbortedTxn::decode_all(&b)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    let _ = cleaned.discard_cleaned();
                    return Err(e.into());
                }
            }
        }
        let read = txn.len();
        txn.retain(|a| !dropped_aborts.contains(&(a.producer_id, a.last_offset)));
        let txn_path = self.txn_index_path(base);
        let txn_tmp = txn_path.with_extension(format!("txnindex{}", super::segment::CLEANED));
        let rewrite_txn = group.len() > 1 || txn.len() != read;
        if rewrite_txn && !txn.is_empty() {
            let buf = AbortedTxn::encode_all(&txn);
            let written = File::create(&txn_tmp).and_then(|mut f| {
                io::Write::write_all(&mut f, &buf)?;
                f.sync_data()
            });
            if let Err(e) = written {
                let _ = std::fs::remove_file(&txn_tmp);
                let _ = cleaned.discard_cleaned();
                return Err(e.into());
            }
        }
        // Once the copy's log has its name it is the segment, whatever else fails: the
        // map follows the disk.
        if let Err(e) = cleaned.install_cleaned_log() {
            let _ = cleaned.discard_cleaned();
            let _ = std::fs::remove_file(&txn_tmp);
            return Err(e.into());
        }
        if let Err(e) = cleaned.install_cleaned_indexes() {
            tracing::warn!(dir = %self.dir.display(), segment = base, "cleaned indexes not installed (rebuilt at the next start): {e}");
        }
        if rewrite_txn {
            let r = if txn.is_empty() {
                match std::fs::remove_file(&txn_path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    r => r,
                }
            } else {
                std::fs::rename(&txn_tmp, &txn_path)
            };
            if let Err(e) = r {
                // The next start must not trust the `.txnindex` files: no producer
                // snapshot is written, so it rebuilds them from the log.
                tracing::warn!(dir = %self.dir.display(), segment = base, "aborted-transaction index not rewritten (rebuilt at the next start): {e}");
                self.txn_index_stale = true;
            }
        }
        self.producers.forget_aborted(dropped_aborts);
        // The copy is in place before the segments it replaces go: after a crash in
        // between, opening the log drops the segments it overlaps. If the directory
        // cannot be synced their files stay, for that start to drop.
        let synced = File::open(&self.dir).and_then(|d| d.sync_all());
        if let Err(e) = &synced {
            tracing::warn!(dir = %self.dir.display(), "directory sync failed; the cleaned segments' files stay: {e}");
            // Nor is the `.txnindex` change known to be on disk.
            self.txn_index_stale |= rewrite_txn;
        }
        self.segments.insert(base, cleaned);
        for s in &group[1..] {
            if let Some(old) = self.segments.remove(&s.base)
                && synced.is_ok()
                && let Err(e) = old.delete()
            {
                tracing::warn!(dir = %self.dir.display(), segment = s.base, "deleting a cleaned segment failed: {e}");
            }
        }
        self.dirty = true;
        Ok(true)
    }

    /// Records that a pass cleaned everything below `offset`.
    pub fn set_cleaned_to(&mut self, offset: i64) {
        self.first_dirty = self.first_dirty.max(offset);
    }

    /// Records the earliest delete horizon of the tombstones and markers a pass kept:
    /// once it passes, the log is cleaned again even if nothing was written to it. A pass
    /// that was `cut` short did not see those past its end, whose horizon stays in the
    /// running.
    pub fn set_delete_horizon(&mut self, horizon_ms: Option<i64>, cut: bool) {
        self.delete_horizon_ms = if cut {
            earlier(self.delete_horizon_ms, horizon_ms)
        } else {
            horizon_ms
        };
    }

    /// Where the next cleaner pass starts reading dirty segments.
    pub fn first_dirty_offset(&self) -> i64 {
        self.first_dirty
    }
}

/// Builds the key map from the plan's dirty segments. If the keys outgrow `budget` bytes
/// in a segment after the first dirty one, the pass stops before that segment and the
/// plan shrinks to match, as Kafka's cleaner does when its dedupe buffer is full. (The
/// keys the map took from that segment may stay: their records are later ones that the
/// pass leaves in place.) The first dirty segment is read whole whatever it takes.
pub fn build_offset_map(plan: &mut CleaningPlan, budget: usize) -> Result<OffsetMap, LogError> {
    let mut map = OffsetMap::default();
    let mut read_any = false;
    let mut cut = None;
    'segments: for (i, seg) in plan.segments.iter().enumerate() {
        if seg.next_offset <= plan.first_dirty {
            continue;
        }
        let mut it = Batches::new(seg);
        while let Some((h, bytes)) = it.next_batch()? {
            if read_any && map.bytes >= budget {
                cut = Some(i);
                break 'segments;
            }
            if h.is_control() || plan.aborted(&h) || h.records_count == 0 {
                continue;
            }
            let section = batch::decompressed_records(&bytes, &h)?;
            for r in batch::record_spans(&section, &h)? {
                if let Some((ks, ke)) = r.key {
                    map.insert(&section[ks..ke], h.base_offset + r.offset_delta as i64);
                }
            }
        }
        if !read_any && map.bytes > budget {
            tracing::warn!(
                dir = %plan.dir.display(), segment = seg.base, bytes = map.bytes, budget,
                "the keys of one segment outgrew log.cleaner.dedupe.buffer.size"
            );
        }
        read_any = true;
    }
    if let Some(i) = cut {
        plan.first_uncleanable = plan.segments[i].base;
        plan.segments.truncate(i);
        plan.cut = true;
    }
    Ok(map)
}

/// What became of the records of one rewritten group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupStats {
    /// Records read.
    pub records_read: u64,
    /// Records kept.
    pub records_kept: u64,
    /// The earliest delete horizon of the tombstones kept, when some are.
    pub delete_horizon_ms: Option<i64>,
    /// Producer id and offset of each abort marker dropped.
    pub dropped_aborts: Vec<(i64, i64)>,
}

/// The earlier of two delete horizons, either of which may be unknown.
pub fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Writes the cleaned copy of `group` (see the module's rules) as a `.cleaned` segment,
/// closed and synced, ready for [`Log::install_cleaned`].
pub fn write_group(
    plan: &mut CleaningPlan,
    map: &OffsetMap,
    group: &[SourceSegment],
    now_ms: i64,
) -> Result<(Segment, GroupStats), LogError> {
    let base = group.first().map_or(0, |s| s.base);
    let mut out = Segment::create_cleaned(&plan.dir, base, now_ms)?;
    match copy_group(plan, map, group, &mut out) {
        Ok(stats) => {
            out.close_active()?;
            out.flush()?;
            Ok((out, stats))
        }
        Err(e) => {
            let _ = out.discard_cleaned();
            Err(e)
        }
    }
}

fn copy_group(
    plan: &mut CleaningPlan,
    map: &OffsetMap,
    group: &[SourceSegment],
    out: &mut Segment,
) -> Result<GroupStats, LogError> {
    let mut stats = GroupStats::default();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut headers: Vec<BatchHeader> = Vec::new();
    // The group's last batch, if it was dropped.
    let mut dropped_last = None;
    for seg in group {
        let mut it = Batches::new(seg);
        while let Some((h, bytes)) = it.next_batch()? {
            let kept = if h.is_control() {
                retained_marker(plan, &h, &bytes, &mut stats)?
            } else {
                stats.records_read += h.records_count.max(0) as u64;
                let kept = retained(plan, map, &h, &bytes, &mut stats)?;
                if h.is_transactional() {
                    *plan.txn_kept_data.entry(h.producer_id).or_default() |= kept.is_some();
                }
                kept
            };
            dropped_last = kept.is_none().then_some(h);
            if let Some(b) = kept {
                headers.push(BatchHeader::parse(&b)?);
                buf.extend_from_slice(&b);
            }
            if buf.len() >= CHUNK {
                out.append(&buf, &headers, plan.index_interval)?;
                buf.clear();
                headers.clear();
            }
        }
    }
    if let Some(h) = dropped_last {
        // The copy must end where the group did: opening the log after a crash between
        // the swap and the deletion of the group's other segments tells them from the
        // copy's end, and offsets past a segment's end are looked for in the next one.
        // An empty batch of no producer covers the dropped batch's offsets.
        let mut p = h;
        p.attributes &= !(batch::TRANSACTIONAL | batch::CONTROL | batch::DELETE_HORIZON);
        p.producer_id = -1;
        p.producer_epoch = -1;
        p.base_sequence = -1;
        let b = batch::rebuild_batch(&p, &[], 0, h.max_timestamp);
        headers.push(BatchHeader::parse(&b)?);
        buf.extend_from_slice(&b);
    }
    if !buf.is_empty() {
        out.append(&buf, &headers, plan.index_interval)?;
    }
    Ok(stats)
}

/// Appends record `r` of `section` (of the batch `old`) to `out` for a batch with
/// header `new`: as it is, or with its timestamp delta re-encoded against a new base
/// timestamp (`scratch` holds the record meanwhile).
fn put_record(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    section: &[u8],
    r: &batch::RecordSpan,
    old: &BatchHeader,
    new: &BatchHeader,
) {
    if new.base_timestamp == old.base_timestamp {
        out.extend_from_slice(&section[r.start..r.end]);
        return;
    }
    scratch.clear();
    scratch.push(section[r.body]);
    batch::put_varint(scratch, r.timestamp - new.base_timestamp);
    scratch.extend_from_slice(&section[r.after_timestamp..r.end]);
    batch::put_varint(out, scratch.len() as i64);
    out.extend_from_slice(scratch);
}

/// A transaction marker as it is to be kept. While a data batch of its transaction is
/// in the log the marker stays as it is. Once none is, it stays for
/// `delete.retention.ms` (a delete horizon, as for tombstones) so that consumers reading
/// the transaction's records meanwhile still see it end, and then goes. A dropped abort
/// marker is noted in `stats`: its transaction must leave the aborted-transaction index
/// with it, or a `read_committed` consumer told of it would skip the producer's
/// transactional batches after it until it saw a marker, a later committed
/// transaction's included.
fn retained_marker(
    plan: &mut CleaningPlan,
    h: &BatchHeader,
    bytes: &Bytes,
    stats: &mut GroupStats,
) -> Result<Option<Vec<u8>>, LogError> {
    let kept_data = plan.txn_kept_data.remove(&h.producer_id).unwrap_or(false);
    let holds_epoch = plan.marker_epochs.get(&h.producer_id) == Some(&h.producer_epoch);
    let kind = batch::control_type(&bytes[HEADER_LEN..]);
    let marker = matches!(kind, Some(batch::MARKER_COMMIT | batch::MARKER_ABORT));
    // Control batches of any other type are not the cleaner's to drop.
    if kept_data || holds_epoch || !marker {
        return Ok(Some(bytes.to_vec()));
    }
    if h.attributes & batch::DELETE_HORIZON != 0 {
        if h.base_timestamp <= plan.now_ms {
            if kind == Some(batch::MARKER_ABORT) {
                stats.dropped_aborts.push((h.producer_id, h.base_offset));
            }
            return Ok(None);
        }
        stats.delete_horizon_ms = earlier(stats.delete_horizon_ms, Some(h.base_timestamp));
        return Ok(Some(bytes.to_vec()));
    }
    let mut header = *h;
    header.attributes |= batch::DELETE_HORIZON;
    header.base_timestamp = plan.delete_horizon_ms;
    let section = batch::decompressed_records(bytes, h)?;
    let (mut kept, mut scratch) = (Vec::new(), Vec::new());
    let spans = batch::record_spans(&section, h)?;
    for r in &spans {
        put_record(&mut kept, &mut scratch, &section, r, h, &header);
    }
    stats.delete_horizon_ms = earlier(stats.delete_horizon_ms, Some(header.base_timestamp));
    Ok(Some(batch::rebuild_batch(
        &header,
        &kept,
        spans.len() as i32,
        h.max_timestamp,
    )))
}

/// The batch as it is to be kept: itself, a rebuilt copy with fewer records, or nothing.
fn retained(
    plan: &CleaningPlan,
    map: &OffsetMap,
    h: &BatchHeader,
    bytes: &Bytes,
    stats: &mut GroupStats,
) -> Result<Option<Vec<u8>>, LogError> {
    let flagged = h.attributes & batch::DELETE_HORIZON != 0;
    let drop_tombstones = flagged && h.base_timestamp <= plan.now_ms;
    let mut kept = Vec::new();
    let mut kept_count = 0i32;
    let mut max_ts = -1i64;
    let mut total = 0usize;
    let mut header = *h;
    if !plan.aborted(h) && h.records_count > 0 {
        let section = batch::decompressed_records(bytes, h)?;
        let spans = batch::record_spans(&section, h)?;
        total = spans.len();
        let keeps = |r: &batch::RecordSpan| {
            let Some((ks, ke)) = r.key else { return false };
            let offset = h.base_offset + r.offset_delta as i64;
            let superseded = map
                .get(&section[ks..ke])
                .is_some_and(|latest| offset < latest);
            !(superseded || r.tombstone && drop_tombstones)
        };
        if !flagged && spans.iter().any(|r| r.tombstone && keeps(r)) {
            // First pass to keep a tombstone of this batch: it may go after the horizon.
            header.attributes |= batch::DELETE_HORIZON;
            header.base_timestamp = plan.delete_horizon_ms;
        }
        let mut record = Vec::new();
        for r in spans.iter().filter(|r| keeps(r)) {
            put_record(&mut kept, &mut record, &section, r, h, &header);
            kept_count += 1;
            max_ts = max_ts.max(r.timestamp);
            if r.tombstone {
                stats.delete_horizon_ms =
                    earlier(stats.delete_horizon_ms, Some(header.base_timestamp));
            }
        }
    }
    stats.records_kept += kept_count as u64;
    let unchanged = header == *h;
    if unchanged
        && kept_count as usize == total
        && total == h.records_count.max(0) as usize
        && total > 0
    {
        return Ok(Some(bytes.to_vec()));
    }
    if h.is_log_append_time() || kept_count == 0 {
        max_ts = h.max_timestamp;
    }
    if kept_count == 0 {
        let last_of_producer =
            h.producer_id >= 0 && plan.producer_last.get(&h.producer_id) == Some(&h.last_offset());
        return Ok(last_of_producer.then(|| batch::rebuild_batch(h, &[], 0, max_ts)));
    }
    Ok(Some(batch::rebuild_batch(
        &header, &kept, kept_count, max_ts,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TopicConfig, TopicDefaults};
    use crate::log::LogCheckpoints;
    use crate::log::batch::validate_produce;
    use runnel_api::records::{BatchBuilder, Compression, decode_batches};
    use std::collections::BTreeMap;
    use std::path::Path;

    fn config(overrides: &[(&str, &str)]) -> TopicConfig {
        let mut map: BTreeMap<String, String> = [
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in overrides {
            map.insert(k.to_string(), v.to_string());
        }
        TopicConfig::new(&TopicDefaults::default(), map).unwrap()
    }

    fn open(dir: &Path, cfg: TopicConfig, clean: bool) -> Log {
        Log::open(dir, cfg, LogCheckpoints::default(), clean, 0)
            .unwrap()
            .0
    }

    type Rec<'a> = (&'a str, Option<&'a str>);

    fn batch(recs: &[Rec], ts: i64, c: Compression, pid: i64, seq: i32, txn: bool) -> Bytes {
        let mut b = BatchBuilder::new();
        for (k, v) in recs {
            b.append(ts, Some(k.as_bytes()), v.map(str::as_bytes), &[]);
        }
        b.build_with(c, pid, if pid >= 0 { 0 } else { -1 }, seq, txn)
    }

    fn append(log: &mut Log, recs: &[Rec], ts: i64, c: Compression) -> i64 {
        let b = batch(recs, ts, c, -1, -1, false);
        let v = validate_produce(&b, 1 << 20).unwrap();
        log.append(&b, &v, ts).unwrap().first_offset
    }

    /// Appends `n` batches of one record each: `key` with the values "0", "1", ...
    fn append_values(log: &mut Log, key: &str, n: usize) {
        for i in 0..n {
            append(
                log,
                &[(key, Some(&i.to_string()))],
                1_000,
                Compression::None,
            );
        }
    }

    /// One cleaner pass as the broker runs it, the log held throughout.
    fn clean(log: &mut Log, now: i64) -> bool {
        log.flush_all(now).unwrap();
        let Some(mut plan) = log.cleaning_plan(now) else {
            return false;
        };
        let map = build_offset_map(&mut plan, 1 << 30).unwrap();
        let mut horizon = None;
        for g in plan.groups() {
            let (seg, stats) = write_group(&mut plan, &map, &g, now).unwrap();
            assert!(log.install_cleaned(&g, seg, &stats.dropped_aborts).unwrap());
            horizon = earlier(horizon, stats.delete_horizon_ms);
        }
        log.set_cleaned_to(plan.first_uncleanable);
        log.set_delete_horizon(horizon, plan.cut);
        true
    }

    /// (offset, key, value) of every record from the log start.
    fn contents(log: &Log) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while let Some(slice) = log.read(offset, 1 << 20, true).unwrap() {
            let d = decode_batches(slice.read().unwrap(), true).unwrap();
            for r in d.records.iter().filter(|r| r.offset >= offset) {
                let s = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into());
                out.push((r.offset, s(&r.key).unwrap_or_default(), s(&r.value)));
            }
            match d.next_offset {
                Some(n) if n > offset => offset = n,
                _ => break,
            }
        }
        out
    }

    fn latest(c: &[(i64, String, Option<String>)]) -> BTreeMap<String, Option<String>> {
        c.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn compaction_keeps_each_keys_last_record_at_its_offset_under_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = open(dir.path(), config(&[("segment.bytes", "400")]), true);
            // Three rounds over ten keys, two keys per batch; the third round writes only
            // the even keys, so the second round's batches lose one record of two.
            for round in 0..3 {
                for k in (0..10).step_by(2) {
                    let (a, b) = (format!("k{k}"), format!("k{}", k + 1));
                    let (va, vb) = (format!("r{round}"), format!("r{round}"));
                    if round < 2 {
                        append(&mut log, &[(&a, Some(&va)), (&b, Some(&vb))], 1_000, c);
                    } else {
                        append(&mut log, &[(&a, Some(&va))], 1_000, c);
                    }
                }
            }
            log.roll(1_000).unwrap();
            // Written in small segments, cleaned into larger ones.
            log.set_config(config(&[("segment.bytes", "100000")]));
            let before = contents(&log);
            assert_eq!(before.len(), 25);
            let want = latest(&before);
            let segments = log.segment_count();
            assert!(clean(&mut log, 2_000), "{c:?}");
            let after = contents(&log);
            assert_eq!(latest(&after), want, "{c:?}");
            assert_eq!(after.len(), 10, "{c:?}: one record per key: {after:?}");
            for (offset, k, _) in &after {
                // Every kept record has the offset it had: the last one of its key.
                let last = before.iter().rev().find(|(_, kk, _)| kk == k).unwrap().0;
                assert_eq!(*offset, last, "{c:?} {k}");
            }
            assert!(log.segment_count() < segments, "{c:?}: segments merge");
            assert!(!clean(&mut log, 2_500), "nothing dirty is left");
            assert_eq!(log.log_end_offset(), 25);
            // The same after a clean and an unclean restart.
            for clean_start in [true, false] {
                log.flush_all(3_000).unwrap();
                drop(log);
                log = open(
                    dir.path(),
                    config(&[("segment.bytes", "100000")]),
                    clean_start,
                );
                assert_eq!(contents(&log), after, "{c:?} clean start {clean_start}");
                assert_eq!(log.log_end_offset(), 25);
            }
            // A log opened without the broker's cleaner checkpoint is all dirty; cleaning
            // it again changes nothing.
            assert!(clean(&mut log, 4_000));
            assert_eq!(contents(&log), after, "{c:?}");
        }
    }

    #[test]
    fn tombstones_stay_for_delete_retention_after_the_pass_that_kept_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[("delete.retention.ms", "10000")]);
        let mut log = open(dir.path(), cfg, true);
        append(
            &mut log,
            &[("a", Some("1")), ("b", Some("1"))],
            1_000,
            Compression::None,
        );
        append(
            &mut log,
            &[("b", Some("2")), ("a", None)],
            1_500,
            Compression::Lz4,
        );
        log.roll(1_000).unwrap();
        assert!(clean(&mut log, 2_000));
        assert_eq!(
            contents(&log),
            vec![(2, "b".into(), Some("2".into())), (3, "a".into(), None)],
            "the tombstone replaced a's value and stays for consumers to see"
        );
        // The pass gave the tombstone's batch the delete horizon 2,000 + 10,000 in its
        // base timestamp; the records' own timestamps did not change.
        let slice = log.read(2, 1 << 20, true).unwrap().unwrap();
        let bytes = slice.read().unwrap();
        let h = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(h.attributes & batch::DELETE_HORIZON, batch::DELETE_HORIZON);
        assert_eq!(h.base_timestamp, 12_000);
        let d = decode_batches(bytes, true).unwrap();
        assert!(
            d.records.iter().all(|r| r.timestamp == 1_500),
            "{:?}",
            d.records
        );
        assert_eq!(log.offset_for_timestamp(1_200).unwrap(), Some((2, 1_500)));
        // A later pass before the horizon keeps it; one after drops it.
        append(&mut log, &[("c", Some("1"))], 5_000, Compression::None);
        log.roll(5_000).unwrap();
        assert!(clean(&mut log, 11_999));
        assert!(
            contents(&log)
                .iter()
                .any(|(_, k, v)| k == "a" && v.is_none())
        );
        append(&mut log, &[("d", Some("1"))], 12_000, Compression::None);
        log.roll(12_000).unwrap();
        assert!(clean(&mut log, 12_000));
        let keys: Vec<String> = contents(&log).into_iter().map(|(_, k, _)| k).collect();
        assert_eq!(keys, ["b", "c", "d"], "the tombstone is gone");
    }

    #[test]
    fn aborted_records_are_dropped_and_never_hide_a_committed_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), config(&[]), true);
        append(
            &mut log,
            &[("k", Some("committed"))],
            1_000,
            Compression::None,
        );
        let b = batch(
            &[("k", Some("aborted"))],
            1_000,
            Compression::Gzip,
            5,
            0,
            true,
        );
        let v = validate_produce(&b, 1 << 20).unwrap();
        log.append(&b, &v, 1_000).unwrap();
        let marker = log.append_marker(5, 0, false, 0, 1_000).unwrap();
        log.roll(1_000).unwrap();
        assert_eq!(log.last_stable_offset(), 3);
        assert!(clean(&mut log, 2_000));
        // The committed value stays (the aborted record is not in the key map) and the
        // aborted record is gone; the marker stays for read_committed consumers.
        assert_eq!(
            contents(&log),
            vec![(0, "k".into(), Some("committed".into()))]
        );
        let slice = log.read(1, 1 << 20, true).unwrap().unwrap();
        let d = decode_batches(slice.read().unwrap(), true).unwrap();
        assert_eq!(d.next_offset, Some(marker + 1), "the marker batch is kept");
    }

    #[test]
    fn an_open_transaction_and_the_compaction_lag_hold_segments_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(
            dir.path(),
            config(&[("min.compaction.lag.ms", "5000")]),
            true,
        );
        append(&mut log, &[("k", Some("1"))], 1_000, Compression::None);
        append(&mut log, &[("k", Some("2"))], 1_000, Compression::None);
        log.roll(1_000).unwrap();
        assert!(log.cleaning_plan(3_000).is_none(), "younger than the lag");
        let b = batch(&[("k", Some("open"))], 7_000, Compression::None, 9, 0, true);
        let v = validate_produce(&b, 1 << 20).unwrap();
        log.append(&b, &v, 7_000).unwrap();
        log.roll(7_000).unwrap();
        assert!(
            log.cleaning_plan(7_000).is_none(),
            "rolled segments wait for their fsync"
        );
        log.flush_all(7_000).unwrap();
        let plan = log.cleaning_plan(7_000).unwrap();
        assert_eq!(
            plan.first_uncleanable, 2,
            "the open transaction's segment waits"
        );
        assert!(clean(&mut log, 7_000));
        let c = contents(&log);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0], (1, "k".into(), Some("2".into())));
        assert_eq!(
            c[1].0, 2,
            "the open transaction's record is not compacted away"
        );
    }

    #[test]
    fn a_producers_last_batch_stays_as_an_empty_batch_with_its_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), config(&[]), true);
        for seq in 0..2 {
            let b = batch(&[("k", Some("p"))], 1_000, Compression::None, 7, seq, false);
            let v = validate_produce(&b, 1 << 20).unwrap();
            log.append(&b, &v, 1_000).unwrap();
        }
        append(&mut log, &[("k", Some("other"))], 1_000, Compression::None);
        log.roll(1_000).unwrap();
        assert!(clean(&mut log, 2_000));
        assert_eq!(contents(&log), vec![(2, "k".into(), Some("other".into()))]);
        // The first batch of producer 7 is gone; its last stays, empty, so a restart that
        // replays the log still knows the producer's last sequence.
        let slice = log.read(0, 1 << 20, true).unwrap().unwrap();
        let bytes = slice.read().unwrap();
        let h = BatchHeader::parse(&bytes).unwrap();
        assert_eq!((h.base_offset, h.records_count, h.producer_id), (1, 0, 7));
        assert_eq!(h.base_sequence, 1);
        batch::check_batch(&bytes[..h.total_size()]).unwrap();
        log.flush_all(3_000).unwrap();
        drop(log);
        let log = open(dir.path(), config(&[]), false);
        let p = log.producer_state().producer(7).unwrap();
        assert_eq!(p.batches.back().unwrap().last_seq, 1);
    }

    #[test]
    fn install_gives_up_when_the_log_changed_under_the_cleaner() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), config(&[("segment.bytes", "200")]), true);
        append_values(&mut log, "k", 6);
        log.roll(1_000).unwrap();
        log.flush_all(2_000).unwrap();
        let mut plan = log.cleaning_plan(2_000).unwrap();
        let map = build_offset_map(&mut plan, 1 << 30).unwrap();
        let group = plan.groups().remove(0);
        let (seg, _) = write_group(&mut plan, &map, &group, 2_000).unwrap();
        // DeleteRecords dropped the group's first segment meanwhile.
        log.delete_records_before(log.segment_bases()[1]).unwrap();
        let before = contents(&log);
        assert!(!log.install_cleaned(&group, seg, &[]).unwrap());
        assert_eq!(contents(&log), before);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cleaned"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_crash_in_the_middle_of_a_swap_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = || config(&[("segment.bytes", "100000")]);
        let mut log = open(dir.path(), config(&[("segment.bytes", "150")]), true);
        for i in 0..6 {
            let v = i.to_string();
            append(
                &mut log,
                &[("k", Some(&v)), (&format!("u{i}"), Some(&v))],
                1_000,
                Compression::None,
            );
        }
        log.roll(1_000).unwrap();
        // Small segments written, a group of several cleaned.
        log.set_config(config(&[("segment.bytes", "100000")]));
        let want = latest(&contents(&log));
        log.flush_all(2_000).unwrap();
        let mut plan = log.cleaning_plan(2_000).unwrap();
        let map = build_offset_map(&mut plan, 1 << 30).unwrap();
        let group = plan.groups().remove(0);
        assert!(group.len() > 1, "{group:?}");
        // A crash after the cleaned copy was written but before the swap: the copy is
        // removed at the next start and the log is as it was.
        let (seg, _) = write_group(&mut plan, &map, &group, 2_000).unwrap();
        std::mem::forget(seg);
        log.flush_all(2_000).unwrap();
        let old: Vec<(PathBuf, Vec<u8>)> = group[1..]
            .iter()
            .map(|s| {
                let p = dir
                    .path()
                    .join(super::super::segment::file_name(s.base, ".log"));
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        drop(log);
        let mut log = open(dir.path(), cfg(), false);
        assert_eq!(latest(&contents(&log)), want);
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".cleaned")
        }));
        // A crash after the cleaned log replaced the first segment but before the others
        // were deleted (put back here): the start drops those the new one overlaps.
        assert!(clean(&mut log, 2_000));
        let cleaned = contents(&log);
        log.flush_all(2_000).unwrap();
        drop(log);
        for (p, b) in &old {
            std::fs::write(p, b).unwrap();
        }
        let log = open(dir.path(), cfg(), false);
        let c = contents(&log);
        assert_eq!(latest(&c), want);
        assert_eq!(c, cleaned, "the overlapped segments are dropped");
    }

    #[test]
    fn a_full_key_map_stops_the_pass_after_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), config(&[("segment.bytes", "300")]), true);
        for i in 0..12 {
            let k = format!("key-{i}");
            append(
                &mut log,
                &[(&k, Some("v")), (&k, Some("w"))],
                1_000,
                Compression::None,
            );
        }
        log.roll(1_000).unwrap();
        log.flush_all(2_000).unwrap();
        let mut plan = log.cleaning_plan(2_000).unwrap();
        let bases = log.segment_bases();
        assert!(bases.len() > 3);
        build_offset_map(&mut plan, 1).unwrap();
        assert_eq!(
            plan.first_uncleanable, bases[1],
            "one segment's keys, then stop"
        );
    }

    #[test]
    fn a_copy_whose_last_batch_went_still_ends_where_its_group_did() {
        let dir = tempfile::tempdir().unwrap();
        let small = || config(&[("segment.bytes", "150")]);
        let mut log = open(dir.path(), small(), true);
        append_values(&mut log, "k", 8);
        log.roll(1_000).unwrap();
        assert_eq!(log.segment_bases(), [0, 2, 4, 6, 8]);
        // Cleaned two segments a group: every record of the first group is superseded.
        let cfg = || config(&[("segment.bytes", "300")]);
        log.set_config(cfg());
        let member = dir.path().join(super::super::segment::file_name(2, ".log"));
        let member_bytes = std::fs::read(&member).unwrap();
        assert!(clean(&mut log, 2_000));
        assert_eq!(log.segment_bases(), [0, 4, 8]);
        assert_eq!(contents(&log), vec![(7, "k".into(), Some("7".into()))]);
        // The first copy holds one empty batch of no producer where offset 3 was.
        let slice = log.read(0, 1 << 20, true).unwrap().unwrap();
        let bytes = slice.read().unwrap();
        let h = batch::check_batch(&bytes).unwrap();
        assert_eq!((h.base_offset, h.last_offset(), h.records_count), (3, 3, 0));
        assert_eq!((h.producer_id, h.base_sequence, h.attributes), (-1, -1, 0));
        // A crash before the group's second segment was deleted: the start drops it,
        // since the copy covers its offsets, and none of its old records come back.
        log.flush_all(3_000).unwrap();
        drop(log);
        std::fs::write(&member, &member_bytes).unwrap();
        let log = open(dir.path(), cfg(), false);
        assert_eq!(log.segment_bases(), [0, 4, 8]);
        assert_eq!(contents(&log), vec![(7, "k".into(), Some("7".into()))]);
        assert!(!member.exists());
    }

    #[test]
    fn a_damaged_segment_stops_the_pass_and_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), config(&[]), true);
        append_values(&mut log, "k", 3);
        log.roll(1_000).unwrap();
        log.flush_all(1_000).unwrap();
        drop(log);
        // A flipped bit in the second batch's value.
        let path = dir.path().join(super::super::segment::file_name(0, ".log"));
        let mut b = std::fs::read(&path).unwrap();
        let second = BatchHeader::parse(&b).unwrap().total_size();
        let end = second + BatchHeader::parse(&b[second..]).unwrap().total_size();
        b[end - 1] ^= 1;
        std::fs::write(&path, &b).unwrap();
        let log = open(dir.path(), config(&[]), true);
        let mut plan = log.cleaning_plan(2_000).unwrap();
        let err = build_offset_map(&mut plan, 1 << 30).unwrap_err();
        assert!(err.to_string().contains("CRC"), "{err}");
        // Nor does a copy of the damaged segment get written.
        let group = plan.groups().remove(0);
        let err = write_group(&mut plan, &OffsetMap::default(), &group, 2_000)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("CRC"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".cleaned")), "{names:?}");
        assert_eq!(log.log_end_offset(), 3);
    }

    #[test]
    fn an_idle_log_drops_its_tombstones_once_their_horizon_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), config(&[("delete.retention.ms", "1000")]), true);
        append(&mut log, &[("a", Some("1"))], 1_000, Compression::None);
        append(
            &mut log,
            &[("a", None), ("b", Some("1"))],
            1_000,
            Compression::None,
        );
        log.roll(1_000).unwrap();
        assert!(clean(&mut log, 2_000));
        assert_eq!(contents(&log).len(), 2, "the tombstone stays a while");
        // Nothing written since: no pass until the horizon, 2,000 + 1,000.
        assert!(log.cleaning_plan(2_999).is_none());
        assert!(clean(&mut log, 3_000));
        assert_eq!(contents(&log), vec![(2, "b".into(), Some("1".into()))]);
        assert!(log.cleaning_plan(100_000).is_none(), "no tombstone is left");
    }

    #[test]
    fn a_segment_only_partly_cleaned_is_dirty() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), config(&[]), true);
        append(&mut log, &[("k", Some("1"))], 1_000, Compression::None);
        append(&mut log, &[("k", Some("2"))], 1_000, Compression::None);
        log.roll(1_000).unwrap();
        append(&mut log, &[("j", Some("1"))], 1_000, Compression::None);
        log.roll(1_000).unwrap();
        // A checkpoint from the middle of the first segment (a log truncated and
        // written again since, say): that segment's keys are read too.
        log.set_cleaned_to(1);
        assert!(clean(&mut log, 2_000));
        assert_eq!(
            contents(&log),
            vec![
                (1, "k".into(), Some("2".into())),
                (2, "j".into(), Some("1".into()))
            ]
        );
    }

    /// (base offset, is control, has a delete horizon) of every batch from offset 0.
    fn batches(log: &Log) -> Vec<(i64, bool, bool)> {
        let mut out = Vec::new();
        let mut offset = 0;
        while let Some(slice) = log.read(offset, 1 << 20, true).unwrap() {
            let bytes = slice.read().unwrap();
            let mut at = 0;
            while at + HEADER_LEN <= bytes.len() {
                let h = BatchHeader::parse(&bytes[at..]).unwrap();
                if h.last_offset() >= offset {
                    let flagged = h.attributes & batch::DELETE_HORIZON != 0;
                    out.push((h.base_offset, h.is_control(), flagged));
                    offset = h.last_offset() + 1;
                }
                at += h.total_size();
            }
        }
        out
    }

    #[test]
    fn a_commit_marker_goes_a_delete_retention_after_its_transactions_data() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = || config(&[("delete.retention.ms", "1000")]);
        let mut log = open(dir.path(), cfg(), true);
        for (seq, key) in [(0, "k"), (1, "m")] {
            let b = batch(&[(key, Some("t"))], 1_000, Compression::None, 5, seq, true);
            let v = validate_produce(&b, 1 << 20).unwrap();
            log.append(&b, &v, 1_000).unwrap();
            log.append_marker(5, 0, true, 0, 1_000).unwrap();
        }
        append(&mut log, &[("k", Some("plain"))], 1_000, Compression::None);
        log.roll(1_000).unwrap();
        assert!(clean(&mut log, 2_000));
        // The first transaction's record is superseded; its marker stays a while, with
        // a delete horizon. The second's record stays, and so does its marker, as it was.
        assert_eq!(
            contents(&log),
            vec![
                (2, "m".into(), Some("t".into())),
                (4, "k".into(), Some("plain".into()))
            ]
        );
        assert_eq!(
            batches(&log),
            [
                (1, true, true),
                (2, false, false),
                (3, true, false),
                (4, false, false)
            ]
        );
        let slice = log.read(1, 1 << 20, true).unwrap().unwrap();
        let bytes = slice.read().unwrap();
        let h = BatchHeader::parse(&bytes).unwrap();
        batch::check_batch(&bytes[..h.total_size()]).unwrap();
        assert_eq!(h.base_timestamp, 3_000);
        assert_eq!(
            batch::control_type(&bytes[HEADER_LEN..]),
            Some(batch::MARKER_COMMIT)
        );
        assert!(log.cleaning_plan(2_999).is_none());
        assert!(clean(&mut log, 3_000));
        assert_eq!(
            batches(&log),
            [(2, false, false), (3, true, false), (4, false, false)]
        );
        // State rebuilt from the log: no transaction left open, the producer's sequence
        // kept.
        log.flush_all(4_000).unwrap();
        drop(log);
        let log = open(dir.path(), cfg(), false);
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
        let p = log.producer_state().producer(5).unwrap();
        assert_eq!(p.batches.back().unwrap().last_seq, 1);
    }

    #[test]
    fn a_commit_marker_that_alone_holds_its_producers_epoch_stays() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = || config(&[("delete.retention.ms", "1000")]);
        let mut log = open(dir.path(), cfg(), true);
        // Transactions v2: the commit marker carries the epoch the commit bumped to.
        let b = batch(&[("k", Some("t"))], 1_000, Compression::None, 6, 0, true);
        let v = validate_produce(&b, 1 << 20).unwrap();
        log.append(&b, &v, 1_000).unwrap();
        log.append_marker(6, 1, true, 0, 1_000).unwrap();
        append(&mut log, &[("k", Some("plain"))], 1_000, Compression::None);
        log.roll(1_000).unwrap();
        assert!(clean(&mut log, 2_000));
        assert!(!clean(&mut log, 10_000), "no horizon to wait for");
        assert_eq!(batches(&log), [(1, true, false), (2, false, false)]);
        log.flush_all(10_000).unwrap();
        drop(log);
        let log = open(dir.path(), cfg(), false);
        assert_eq!(log.producer_state().producer(6).unwrap().epoch, 1);
    }

    #[test]
    fn max_compaction_lag_counts_from_a_dirty_segments_first_batch() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&[
            ("min.cleanable.dirty.ratio", "0.99"),
            ("max.compaction.lag.ms", "5000"),
        ]);
        let mut log = open(dir.path(), cfg, true);
        for i in 0..20 {
            let k = format!("key-{i}");
            append(
                &mut log,
                &[(&k, Some("a value of some length"))],
                1_000,
                Compression::None,
            );
        }
        log.roll(1_000).unwrap();
        assert!(clean(&mut log, 2_000));
        // A small dirty segment: far under the ratio, so only the lag can get it cleaned.
        append(
            &mut log,
            &[("key-0", Some("new"))],
            3_000,
            Compression::None,
        );
        append(
            &mut log,
            &[("key-1", Some("new"))],
            7_500,
            Compression::None,
        );
        log.roll(7_500).unwrap();
        log.flush_all(7_500).unwrap();
        assert!(
            log.cleaning_plan(7_999).is_none(),
            "4.999 s since the first batch"
        );
        let plan = log.cleaning_plan(8_000).expect("5 s since the first batch");
        assert_eq!(plan.first_dirty, 20);
        assert!(clean(&mut log, 8_000));
        let c = latest(&contents(&log));
        assert_eq!(c.len(), 20);
        assert_eq!(c["key-0"].as_deref(), Some("new"));
        assert!(
            log.cleaning_plan(100_000).is_none(),
            "nothing dirty is left"
        );
    }

    #[test]
    fn an_abort_marker_goes_with_its_txnindex_entry_once_its_data_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |seg: &str| config(&[("delete.retention.ms", "1000"), ("segment.bytes", seg)]);
        let mut log = open(dir.path(), cfg("150"), true);
        let append_txn = |log: &mut Log, key: &str, seq: i32| {
            let b = batch(&[(key, Some("t"))], 1_000, Compression::None, 5, seq, true);
            let v = validate_produce(&b, 1 << 20).unwrap();
            log.append(&b, &v, 1_000).unwrap();
        };
        // Producer 5 aborts one transaction, then commits another; small segments.
        append_txn(&mut log, "k", 0);
        let abort = log.append_marker(5, 0, false, 0, 1_000).unwrap();
        append_txn(&mut log, "m", 1);
        log.append_marker(5, 0, true, 0, 1_000).unwrap();
        append(&mut log, &[("z", Some("plain"))], 1_000, Compression::None);
        log.roll(1_000).unwrap();
        let end = log.log_end_offset();
        let aborted = |log: &Log| {
            log.aborted_between(0, end)
                .iter()
                .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                .collect::<Vec<_>>()
        };
        assert_eq!(aborted(&log), [(5, 0, abort)]);
        // The segments are cleaned in one group: the abort marker outlives its data for
        // delete.retention.ms, and so does its transaction in the merged `.txnindex`.
        log.set_config(cfg("100000"));
        assert!(clean(&mut log, 2_000));
        assert_eq!(
            batches(&log),
            [
                (1, true, true),
                (2, false, false),
                (3, true, false),
                (4, false, false)
            ]
        );
        assert_eq!(aborted(&log), [(5, 0, abort)]);
        let reopen = |log: Log, clean: bool| {
            let mut log = log;
            log.flush_all(2_500).unwrap();
            if clean {
                log.write_producer_snapshot().unwrap();
            }
            drop(log);
            open(dir.path(), cfg("100000"), clean)
        };
        let mut log = reopen(log, true);
        assert_eq!(aborted(&log), [(5, 0, abort)], "read from the .txnindex");
        // Once the horizon passed the marker goes, and its transaction with it.
        assert!(clean(&mut log, 3_000));
        assert_eq!(
            batches(&log),
            [(2, false, false), (3, true, false), (4, false, false)]
        );
        assert_eq!(aborted(&log), []);
        let mut txn_files = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".txnindex"));
        assert_eq!(txn_files.next(), None);
        let log = reopen(log, true);
        assert_eq!(aborted(&log), []);
        let log = reopen(log, false);
        assert_eq!(aborted(&log), []);
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
        assert_eq!(
            latest(&contents(&log)).into_iter().collect::<Vec<_>>(),
            [
                ("m".into(), Some("t".into())),
                ("z".into(), Some("plain".into()))
            ]
        );
    }

    #[test]
    fn the_key_map_holds_a_fixed_size_digest_per_key() {
        let mut m = OffsetMap::default();
        let long = vec![b'k'; 10_000];
        m.insert(b"a", 1);
        m.insert(&long, 2);
        m.insert(b"a", 3);
        m.insert(b"", 4);
        assert_eq!(m.len(), 3);
        assert_eq!(m.bytes, 3 * MAP_ENTRY_BYTES, "a key's length costs nothing");
        assert_eq!(m.get(b"a"), Some(3));
        assert_eq!(m.get(&long), Some(2));
        assert_eq!(m.get(b""), Some(4));
        assert_eq!(m.get(b"b"), None);
        assert_eq!(m.get(&long[1..]), None);
    }
}
