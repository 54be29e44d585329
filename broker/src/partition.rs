//! A partition: its log behind a mutex, and the append path's rules.
//!
//! On one node the leader is the whole ISR, so the high watermark is the log end offset
//! as soon as an append returns.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use bytes::Bytes;

use crate::config::TimestampType;
use crate::log::batch::{self, BatchError, BatchHeader, ProduceLimits};
use crate::log::{AppendInfo, Log, LogError};

/// One topic partition hosted by this broker.
#[derive(Debug)]
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    log: Mutex<Log>,
    /// One fsync at a time per partition; callers queued behind it usually find their
    /// records already covered (group commit).
    flush_turn: tokio::sync::Mutex<()>,
    /// fsyncs of this log done by [`Partition::flush_to`] so far.
    fsyncs: std::sync::atomic::AtomicU64,
    /// Fetches long-polling this partition (as Kafka's fetch purgatory is keyed by
    /// partition): an append wakes these, not every waiting fetch of the broker.
    watchers: Mutex<Vec<Arc<Notify>>>,
}

impl Partition {
    /// Wraps an opened log.
    pub fn new(topic: String, index: i32, log: Log) -> Self {
        Self {
            topic,
            index,
            log: Mutex::new(log),
            flush_turn: tokio::sync::Mutex::new(()),
            fsyncs: std::sync::atomic::AtomicU64::new(0),
            watchers: Mutex::new(Vec::new()),
        }
    }

    fn watchers(&self) -> MutexGuard<'_, Vec<Arc<Notify>>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiting fetch: `wake` gets a permit at every later append.
    pub fn watch(&self, wake: &Arc<Notify>) {
        self.watchers().push(wake.clone());
    }

    /// Unregisters a fetch registered with [`Partition::watch`].
    pub fn unwatch(&self, wake: &Arc<Notify>) {
        let mut w = self.watchers();
        if let Some(i) = w.iter().position(|x| Arc::ptr_eq(x, wake)) {
            w.swap_remove(i);
        }
    }

    /// How many fetches are waiting on this partition now.
    pub fn waiting_fetches(&self) -> usize {
        self.watchers().len()
    }

    /// Wakes the fetches waiting on this partition; call after anything that can change
    /// what a fetch reads (appends, transaction markers moving the last stable offset).
    pub fn wake_fetches(&self) {
        for w in self.watchers().iter() {
            // A permit is kept if the fetch is between reads, so no append is missed.
            w.notify_one();
        }
    }

    /// Locks the log. A poisoned lock (a panic while appending) is recovered: the log's
    /// own state is updated only after each write succeeds.
    pub fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates and appends a produce payload.
    pub fn append_records(&self, payload: &Bytes, now_ms: i64) -> Result<AppendInfo, LogError> {
        let (limits, target) = {
            let log = self.log();
            let cfg = log.config();
            let timestamps = (cfg.message_timestamp_type == TimestampType::CreateTime).then(|| {
                (
                    now_ms.saturating_sub(cfg.message_timestamp_before_max_ms),
                    now_ms.saturating_add(cfg.message_timestamp_after_max_ms),
                )
            });
            let limits = ProduceLimits {
                max_message_bytes: cfg.max_message_bytes.max(0) as usize,
                timestamps,
                keys_required: cfg.compacted(),
            };
            let target = batch::target_codec(&cfg.compression_type)
                .map(|codec| (codec, cfg.compression_level(codec)));
            (limits, target)
        };
        // Validation (CRC, decompression) runs before the lock is taken.
        let batches = batch::validate_produce_with(payload, &limits).map_err(LogError::Batch)?;
        // A topic whose compression.type names a codec stores every batch in it.
        if let Some((codec, level)) = target
            && let Some(rebuilt) =
                batch::recompress(payload, &batches, codec, level).map_err(LogError::Batch)?
        {
            // Checked again as sent: the size can change (max.message.bytes).
            let batches =
                batch::validate_produce_with(&rebuilt, &limits).map_err(LogError::Batch)?;
            return self.log().append(&rebuilt, &batches, now_ms);
        }
        let mut log = self.log();
        log.append(payload, &batches, now_ms)
    }

    /// Appends a batch written by a coordinator on a producer's behalf (transactional
    /// offset commits): validated, but not checked against the producer's sequence.
    pub fn append_internal(&self, payload: &Bytes, now_ms: i64) -> Result<AppendInfo, LogError> {
        let limits = ProduceLimits {
            max_message_bytes: usize::MAX,
            timestamps: None,
            keys_required: false,
        };
        let batches = batch::validate_produce_with(payload, &limits).map_err(LogError::Batch)?;
        self.log().append_unchecked(payload, &batches, now_ms)
    }

    /// Every complete batch from the log start to the end, in offset order (the startup
    /// replay of internal topics).
    pub fn for_each_batch(&self, mut f: impl FnMut(&BatchHeader, Bytes)) {
        let mut offset = self.log().log_start_offset();
        loop {
            let slice = match self.log().read(offset, 1 << 20, true) {
                Ok(Some(s)) => s,
                _ => break,
            };
            let Ok(mut bytes) = slice.read() else { break };
            let before = offset;
            while let Ok(h) = BatchHeader::parse(&bytes) {
                let size = h.total_size();
                if h.batch_length <= 0 || size > bytes.len() {
                    break;
                }
                offset = h.last_offset() + 1;
                f(&h, bytes.split_to(size));
            }
            if offset <= before {
                break;
            }
        }
    }

    /// Makes the log durable up to `end` (`None`: whatever `flush.messages`/`flush.ms`
    /// ask for now). The fsync runs off the async threads and without the log lock, so
    /// appends go on meanwhile; concurrent callers share fsyncs: one runs at a time, and
    /// a caller whose records an earlier fsync already covered returns without another.
    pub async fn flush_to(&self, end: Option<i64>) -> std::io::Result<()> {
        let _turn = self.flush_turn.lock().await;
        let target = {
            let mut log = self.log();
            let done = match end {
                Some(end) => log.recovery_point() >= end,
                None => !log.needs_flush(crate::broker::now_ms()),
            };
            if done {
                return Ok(());
            }
            log.flush_target()
        };
        let up_to = target.up_to;
        self.fsyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || target.sync())
            .await
            .map_err(std::io::Error::other)??;
        self.log().mark_flushed(up_to, crate::broker::now_ms());
        Ok(())
    }

    /// How many times [`Partition::flush_to`] fsynced this log (fewer than the callers
    /// that waited, when they shared fsyncs).
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The high watermark (== log end offset on a single node).
    pub fn high_watermark(&self) -> i64 {
        self.log().log_end_offset()
    }
}

/// Maps a batch error to the Kafka error code Apache Kafka returns for it.
pub fn batch_error_code(e: &BatchError) -> i16 {
    use kafka_protocol::ResponseError as E;
    match e {
        BatchError::Corrupt(_) => E::CorruptMessage.code(),
        BatchError::Invalid(_) => E::InvalidRecord.code(),
        BatchError::TooLarge { .. } => E::MessageTooLarge.code(),
        BatchError::InvalidTimestamp(_) => E::InvalidTimestamp.code(),
        BatchError::UnsupportedCompression(_) => E::UnsupportedCompressionType.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TopicConfig, TopicDefaults};
    use crate::log::LogCheckpoints;
    use crate::log::batch::tests::encode_batch;
    use kafka_protocol::records::Compression;
    use std::collections::BTreeMap;

    fn partition(dir: &std::path::Path, overrides: &[(&str, &str)]) -> Arc<Partition> {
        let map: BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cfg = TopicConfig::new(&TopicDefaults::default(), map).unwrap();
        let log = Log::open(dir, cfg, LogCheckpoints::default(), true, 0)
            .unwrap()
            .0;
        Arc::new(Partition::new("t".into(), 0, log))
    }

    fn append(p: &Partition, n: usize) -> i64 {
        let now = crate::broker::now_ms();
        p.append_records(&encode_batch(n, now, Compression::None), now)
            .unwrap()
            .last_offset
            + 1
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_waiting_together_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), &[("flush.messages", "1")]);
        let ends: Vec<i64> = (0..40).map(|_| append(&p, 3)).collect();
        assert_eq!(p.log().recovery_point(), 0);
        let waits: Vec<_> = ends
            .iter()
            .map(|&end| {
                let p = p.clone();
                tokio::spawn(async move { p.flush_to(Some(end)).await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        // The first fsync covered all 120 records; every later caller found them durable
        // or waited on that same fsync.
        assert_eq!(p.fsyncs(), 1);
        assert_eq!(p.log().recovery_point(), 120);
        // Nothing new: no fsync.
        p.flush_to(Some(120)).await.unwrap();
        assert_eq!(p.fsyncs(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_returns_only_once_its_records_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), &[("flush.messages", "1")]);
        // Appends race with fsyncs: some land while one runs and need the next.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let end = append(&p, 2);
                        p.flush_to(Some(end)).await.unwrap();
                        let durable = p.log().recovery_point();
                        assert!(
                            durable >= end,
                            "returned at {durable} before {end} was durable"
                        );
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(p.log().recovery_point(), 400);
        assert!(
            (1..=200).contains(&p.fsyncs()),
            "{} fsyncs for 200 callers",
            p.fsyncs()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_due_flush_fsyncs_once_and_then_has_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        // flush.ms=0: every unflushed record is due at once (the broker's periodic check).
        let p = partition(dir.path(), &[("flush.ms", "0")]);
        let end = append(&p, 5);
        p.flush_to(None).await.unwrap();
        assert_eq!((p.fsyncs(), p.log().recovery_point()), (1, end));
        p.flush_to(None).await.unwrap();
        assert_eq!(p.fsyncs(), 1);
        // Without flush.ms or flush.messages due, nothing is fsynced.
        let dir = tempfile::tempdir().unwrap();
        let q = partition(dir.path(), &[]);
        append(&q, 5);
        q.flush_to(None).await.unwrap();
        assert_eq!((q.fsyncs(), q.log().recovery_point()), (0, 0));
    }
}
