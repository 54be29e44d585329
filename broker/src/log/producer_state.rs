//! Per-partition producer state: the sequence numbers and epochs of idempotent and
//! transactional producers, their open transactions, and the aborted transactions that
//! `read_committed` fetches must skip.
//!
//! Plain data plus functions; the log calls [`ProducerState::check`] under its lock before
//! an append and [`ProducerState::apply`] after it, and replays batch headers through the
//! same functions on recovery, so what dedupes a retry live also dedupes it after a
//! restart.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::{Buf, BufMut, BytesMut};

use super::batch::BatchHeader;

/// Batches remembered per producer for duplicate detection (Kafka keeps five: the most a
/// producer has in flight with `max.in.flight.requests.per.connection` ≤ 5).
pub const RETAINED_BATCHES: usize = 5;

/// Sequence range and offsets of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// First sequence number.
    pub first_seq: i32,
    /// Last sequence number.
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Largest timestamp.
    pub timestamp: i64,
}

/// What the partition knows about one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// The last few batches of this epoch, oldest first.
    pub batches: VecDeque<BatchMeta>,
    /// First offset of the transaction open on this partition, if any.
    pub txn_first_offset: Option<i64>,
    /// Coordinator epoch of the last marker.
    pub coordinator_epoch: i32,
    /// Timestamp of the last write (for `producer.id.expiration.ms`).
    pub last_timestamp: i64,
}

impl ProducerEntry {
    fn new(epoch: i16) -> Self {
        Self {
            epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
            coordinator_epoch: -1,
            last_timestamp: -1,
        }
    }

    fn last_seq(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }

    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// An aborted transaction as `.txnindex` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// Producer id.
    pub producer_id: i64,
    /// First offset the transaction wrote on this partition.
    pub first_offset: i64,
    /// Offset of the ABORT marker.
    pub last_offset: i64,
    /// The last stable offset once the abort completed.
    pub last_stable_offset: i64,
}

/// Bytes of one `.txnindex` entry: version (2), producer id, first, last, LSO (8 each).
pub const TXN_INDEX_ENTRY: usize = 34;

impl AbortedTxn {
    /// Kafka's `.txnindex` entry.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_i16(0);
        out.put_i64(self.producer_id);
        out.put_i64(self.first_offset);
        out.put_i64(self.last_offset);
        out.put_i64(self.last_stable_offset);
    }

    /// The `.txnindex` bytes of `list`.
    pub fn encode_all(list: &[Self]) -> BytesMut {
        let mut buf = BytesMut::with_capacity(list.len() * TXN_INDEX_ENTRY);
        for a in list {
            a.encode(&mut buf);
        }
        buf
    }

    /// Reads entries until the bytes run out (a torn tail entry is dropped).
    pub fn decode_all(mut b: &[u8]) -> Vec<Self> {
        let mut out = Vec::new();
        while b.len() >= TXN_INDEX_ENTRY {
            let _version = b.get_i16();
            out.push(Self {
                producer_id: b.get_i64(),
                first_offset: b.get_i64(),
                last_offset: b.get_i64(),
                last_stable_offset: b.get_i64(),
            });
        }
        out
    }
}

/// Why a producer's batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The batch's epoch is older than the producer's current one (a zombie).
    #[error("producer {producer_id} has epoch {current}; a batch with epoch {got} is fenced")]
    InvalidProducerEpoch {
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        got: i16,
        /// Current epoch.
        current: i16,
    },
    /// The batch does not continue the producer's sequence.
    #[error(
        "out of order sequence number for producer {producer_id} at epoch {epoch}: \
         expected {expected}, got {got}"
    )]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// Epoch.
        epoch: i16,
        /// Sequence expected next.
        expected: i32,
        /// Sequence received.
        got: i32,
    },
    /// A transactional/non-transactional mix-up.
    #[error("{0}")]
    InvalidTxnState(String),
}

impl ProducerError {
    /// The Kafka error code.
    pub fn code(&self) -> i16 {
        match self {
            ProducerError::InvalidProducerEpoch { .. } => 47,
            ProducerError::OutOfOrderSequence { .. } => 45,
            ProducerError::InvalidTxnState(_) => 48,
        }
    }
}

/// Outcome of checking a produce payload against the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Append it.
    Append,
    /// A retry of a batch already in the log: answer with its offsets, append nothing.
    Duplicate(BatchMeta),
}

fn next_seq(seq: i32, n: i32) -> i32 {
    // Sequences wrap from i32::MAX to 0.
    ((seq as i64 + n as i64) % (i32::MAX as i64 + 1)) as i32
}

fn batch_last_seq(h: &BatchHeader) -> i32 {
    next_seq(h.base_sequence, h.last_offset_delta)
}

/// The producer state of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset → producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions, in marker-offset order.
    aborted: Vec<AbortedTxn>,
}

impl ProducerState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of a producer, if known.
    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every known producer.
    pub fn producers(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(k, v)| (*k, v))
    }

    /// Checks batches (in order) before they are appended. Nothing changes; call
    /// [`ProducerState::apply`] with the assigned offsets afterwards.
    pub fn check(&self, batches: &[BatchHeader]) -> Result<Check, ProducerError> {
        let mut staged: HashMap<i64, ProducerEntry> = HashMap::new();
        for h in batches {
            if h.producer_id < 0 {
                continue;
            }
            let pid = h.producer_id;
            let current = staged.get(&pid).or_else(|| self.producers.get(&pid));
            let mut entry = match current {
                Some(e) => {
                    if h.producer_epoch < e.epoch {
                        return Err(ProducerError::InvalidProducerEpoch {
                            producer_id: pid,
                            got: h.producer_epoch,
                            current: e.epoch,
                        });
                    }
                    let last = batch_last_seq(h);
                    if h.producer_epoch == e.epoch
                        && let Some(dup) = e
                            .batches
                            .iter()
                            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
                    {
                        return Ok(Check::Duplicate(*dup));
                    }
                    if h.producer_epoch != e.epoch {
                        if h.base_sequence != 0 {
                            return Err(ProducerError::OutOfOrderSequence {
                                producer_id: pid,
                                epoch: h.producer_epoch,
                                expected: 0,
                                got: h.base_sequence,
                            });
                        }
                    } else {
                        let expected = next_seq(e.last_seq(), 1);
                        if h.base_sequence != expected {
                            return Err(ProducerError::OutOfOrderSequence {
                                producer_id: pid,
                                epoch: e.epoch,
                                expected,
                                got: h.base_sequence,
                            });
                        }
                    }
                    e.clone()
                }
                // Nothing known (new producer, or its state expired): any sequence goes.
                None => ProducerEntry::new(h.producer_epoch),
            };
            if !h.is_transactional() && entry.txn_first_offset.is_some() {
                return Err(ProducerError::InvalidTxnState(format!(
                    "producer {pid} sent a non-transactional batch while its transaction \
                     on this partition is open"
                )));
            }
            entry.set_epoch(h.producer_epoch);
            entry.batches.push_back(BatchMeta {
                first_seq: h.base_sequence,
                last_seq: batch_last_seq(h),
                first_offset: -1,
                last_offset: -1,
                timestamp: h.max_timestamp,
            });
            if h.is_transactional() && entry.txn_first_offset.is_none() {
                entry.txn_first_offset = Some(-1);
            }
            staged.insert(pid, entry);
        }
        Ok(Check::Append)
    }

    /// Records an appended data batch (with its final offsets).
    pub fn apply(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        let e = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry::new(h.producer_epoch));
        e.set_epoch(h.producer_epoch);
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: batch_last_seq(h),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            timestamp: h.max_timestamp,
        });
        while e.batches.len() > RETAINED_BATCHES {
            e.batches.pop_front();
        }
        e.last_timestamp = e.last_timestamp.max(h.max_timestamp);
        if h.is_transactional() && e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(h.base_offset);
            self.ongoing.insert(h.base_offset, h.producer_id);
        }
    }

    /// Checks that a marker's epoch is not older than the producer's.
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), ProducerError> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                got: epoch,
                current: e.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Records a COMMIT/ABORT marker at `marker_offset`; returns the aborted transaction
    /// to index when it was an abort.
    pub fn complete_txn(
        &mut self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        marker_offset: i64,
        coordinator_epoch: i32,
        timestamp: i64,
    ) -> Option<AbortedTxn> {
        let e = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch));
        e.set_epoch(epoch);
        e.coordinator_epoch = coordinator_epoch;
        e.last_timestamp = e.last_timestamp.max(timestamp);
        let first = e.txn_first_offset.take();
        if let Some(f) = first {
            self.ongoing.remove(&f);
        }
        if commit {
            return None;
        }
        let lso = self
            .ongoing
            .keys()
            .next()
            .copied()
            .unwrap_or(marker_offset + 1);
        let a = AbortedTxn {
            producer_id,
            first_offset: first.unwrap_or(marker_offset),
            last_offset: marker_offset,
            last_stable_offset: lso,
        };
        self.aborted.push(a);
        Some(a)
    }

    /// First offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The last stable offset given the high watermark.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.first_unstable_offset()
            .map_or(high_watermark, |f| f.min(high_watermark))
    }

    /// Aborted transactions overlapping `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Every aborted transaction known.
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Replaces the aborted list (loaded from `.txnindex` files).
    pub fn set_aborted(&mut self, mut aborted: Vec<AbortedTxn>) {
        aborted.sort_by_key(|a| a.last_offset);
        aborted.dedup();
        self.aborted = aborted;
    }

    /// Forgets the aborted transactions whose markers (producer id, offset) the log
    /// cleaner removed.
    pub fn forget_aborted(&mut self, markers: &[(i64, i64)]) {
        if !markers.is_empty() {
            self.aborted
                .retain(|a| !markers.contains(&(a.producer_id, a.last_offset)));
        }
    }

    /// Forgets aborted transactions wholly below the log start offset.
    pub fn prune_below(&mut self, log_start_offset: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start_offset);
    }

    /// Drops producers idle for longer than `expiration_ms` with no open transaction.
    /// Returns how many were dropped.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms - e.last_timestamp.max(0) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Kafka's producer snapshot (version 1): version, CRC32C of what follows, then one
    /// entry per producer with its last batch.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut body = BytesMut::new();
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        body.put_i32(ids.len() as i32);
        for id in ids {
            let e = &self.producers[id];
            let last = e.batches.back();
            body.put_i64(*id);
            body.put_i16(e.epoch);
            body.put_i32(last.map_or(-1, |b| b.last_seq));
            body.put_i64(last.map_or(-1, |b| b.last_offset));
            body.put_i32(last.map_or(0, |b| (b.last_offset - b.first_offset) as i32));
            body.put_i64(e.last_timestamp);
            body.put_i32(e.coordinator_epoch);
            body.put_i64(e.txn_first_offset.unwrap_or(-1));
        }
        let mut out = BytesMut::with_capacity(6 + body.len());
        out.put_i16(1);
        out.put_u32(crc32c::crc32c(&body));
        out.put_slice(&body);
        out.to_vec()
    }

    /// Loads producers from a snapshot; `None` if it is damaged. Each producer comes
    /// back with its last batch, which is what a retry of the newest write needs.
    pub fn from_snapshot(mut b: &[u8]) -> Option<Self> {
        if b.len() < 10 || b.get_i16() != 1 {
            return None;
        }
        let crc = b.get_u32();
        if crc32c::crc32c(b) != crc {
            return None;
        }
        let n = b.get_i32();
        let mut st = Self::new();
        for _ in 0..n.max(0) {
            if b.len() < 46 {
                return None;
            }
            let id = b.get_i64();
            let epoch = b.get_i16();
            let last_seq = b.get_i32();
            let last_offset = b.get_i64();
            let delta = b.get_i32();
            let ts = b.get_i64();
            let coord = b.get_i32();
            let txn_first = b.get_i64();
            let mut e = ProducerEntry::new(epoch);
            if last_seq >= 0 {
                e.batches.push_back(BatchMeta {
                    first_seq: (last_seq as i64 - delta as i64).max(0) as i32,
                    last_seq,
                    first_offset: last_offset - delta as i64,
                    last_offset,
                    timestamp: ts,
                });
            }
            e.coordinator_epoch = coord;
            e.last_timestamp = ts;
            if txn_first >= 0 {
                e.txn_first_offset = Some(txn_first);
                st.ongoing.insert(txn_first, id);
            }
            st.producers.insert(id, e);
        }
        Some(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(pid: i64, epoch: i16, seq: i32, n: i32, txn: bool) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: if txn { 0x10 } else { 0 },
            last_offset_delta: n - 1,
            base_timestamp: 1,
            max_timestamp: 1,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    fn append(st: &mut ProducerState, next: &mut i64, h: BatchHeader) -> Check {
        let c = st.check(&[h]).expect("accepted");
        if c == Check::Append {
            let mut h = h;
            h.base_offset = *next;
            *next += h.last_offset_delta as i64 + 1;
            st.apply(&h);
        }
        c
    }

    #[test]
    fn a_retry_of_any_of_the_last_five_batches_gets_its_original_offsets() {
        let mut st = ProducerState::new();
        let mut next = 100;
        for i in 0..6 {
            assert_eq!(
                append(&mut st, &mut next, hdr(7, 0, i * 10, 10, false)),
                Check::Append
            );
        }
        // Batch 1 (seq 10..19, offsets 110..119) is still remembered; batch 0 is not.
        match st.check(&[hdr(7, 0, 10, 10, false)]) {
            Ok(Check::Duplicate(b)) => assert_eq!((b.first_offset, b.last_offset), (110, 119)),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert!(matches!(
            st.check(&[hdr(7, 0, 0, 10, false)]),
            Err(ProducerError::OutOfOrderSequence {
                expected: 60,
                got: 0,
                ..
            })
        ));
    }

    #[test]
    fn gaps_and_new_epochs_follow_kafkas_rules() {
        let mut st = ProducerState::new();
        let mut next = 0;
        // A producer the partition has never seen may start anywhere.
        append(&mut st, &mut next, hdr(1, 0, 42, 3, false));
        assert!(matches!(
            st.check(&[hdr(1, 0, 46, 1, false)]),
            Err(ProducerError::OutOfOrderSequence {
                expected: 45,
                got: 46,
                ..
            })
        ));
        // A bumped epoch must restart at sequence 0.
        assert!(matches!(
            st.check(&[hdr(1, 1, 45, 1, false)]),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        append(&mut st, &mut next, hdr(1, 1, 0, 1, false));
        // Older epochs are fenced.
        assert!(matches!(
            st.check(&[hdr(1, 0, 45, 1, false)]),
            Err(ProducerError::InvalidProducerEpoch {
                got: 0,
                current: 1,
                ..
            })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut st = ProducerState::new();
        let mut next = 0;
        append(&mut st, &mut next, hdr(1, 0, i32::MAX - 1, 2, false));
        assert_eq!(
            append(&mut st, &mut next, hdr(1, 0, 0, 1, false)),
            Check::Append
        );
    }

    #[test]
    fn several_batches_in_one_request_are_checked_in_order() {
        let st = ProducerState::new();
        assert_eq!(
            st.check(&[hdr(1, 0, 0, 5, false), hdr(1, 0, 5, 5, false)]),
            Ok(Check::Append)
        );
        assert!(
            st.check(&[hdr(1, 0, 0, 5, false), hdr(1, 0, 6, 5, false)])
                .is_err()
        );
    }

    #[test]
    fn transactions_hold_back_the_lso_and_aborts_are_indexed() {
        let mut st = ProducerState::new();
        let mut next = 0;
        append(&mut st, &mut next, hdr(-1, -1, -1, 5, false)); // 0..4 plain
        append(&mut st, &mut next, hdr(1, 0, 0, 5, true)); // 5..9 txn A
        append(&mut st, &mut next, hdr(2, 0, 0, 5, true)); // 10..14 txn B
        assert_eq!(st.last_stable_offset(next), 5);
        // A non-transactional write during the transaction is refused.
        assert!(matches!(
            st.check(&[hdr(1, 0, 5, 1, false)]),
            Err(ProducerError::InvalidTxnState(_))
        ));
        let a = st
            .complete_txn(1, 0, false, 15, 0, 1)
            .expect("abort indexed");
        assert_eq!(
            (a.first_offset, a.last_offset, a.last_stable_offset),
            (5, 15, 10)
        );
        assert_eq!(st.last_stable_offset(16), 10);
        assert_eq!(st.complete_txn(2, 0, true, 16, 0, 1), None);
        assert_eq!(st.last_stable_offset(17), 17);
        assert_eq!(st.aborted_between(0, 17).len(), 1);
        assert_eq!(st.aborted_between(16, 17).len(), 0);
        // A new transaction by the same producer starts a new range.
        append(&mut st, &mut next, hdr(1, 0, 5, 1, true));
        assert_eq!(st.first_unstable_offset(), Some(15));
    }

    #[test]
    fn snapshots_keep_the_last_batch_and_open_transactions() {
        let mut st = ProducerState::new();
        let mut next = 0;
        append(&mut st, &mut next, hdr(1, 3, 0, 4, false));
        append(&mut st, &mut next, hdr(1, 3, 4, 4, false));
        append(&mut st, &mut next, hdr(2, 0, 0, 2, true));
        let bytes = st.snapshot();
        let back = ProducerState::from_snapshot(&bytes).expect("valid snapshot");
        assert!(matches!(
            back.check(&[hdr(1, 3, 4, 4, false)]),
            Ok(Check::Duplicate(BatchMeta {
                first_offset: 4,
                last_offset: 7,
                ..
            }))
        ));
        assert_eq!(back.first_unstable_offset(), Some(8));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(ProducerState::from_snapshot(&bad).is_none());
    }

    #[test]
    fn idle_producers_expire_but_not_with_an_open_transaction() {
        let mut st = ProducerState::new();
        let mut next = 0;
        append(&mut st, &mut next, hdr(1, 0, 0, 1, false));
        append(&mut st, &mut next, hdr(2, 0, 0, 1, true));
        assert_eq!(st.expire(1_000_000, 1000), 1);
        assert!(st.producer(1).is_none());
        assert!(st.producer(2).is_some());
    }

    #[test]
    fn txn_index_entries_round_trip() {
        let a = AbortedTxn {
            producer_id: 9,
            first_offset: 1,
            last_offset: 5,
            last_stable_offset: 6,
        };
        let mut b = BytesMut::new();
        a.encode(&mut b);
        a.encode(&mut b);
        assert_eq!(b.len(), 2 * TXN_INDEX_ENTRY);
        assert_eq!(AbortedTxn::decode_all(&b[..b.len() - 3]), vec![a]);
    }
}
