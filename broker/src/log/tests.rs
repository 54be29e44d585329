//! Log tests: append/read/index lookup/recovery/retention.

use super::*;
use crate::config::{TopicConfig, TopicDefaults};
use crate::log::batch::tests::encode_batch;
use crate::log::batch::validate_produce;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use std::collections::BTreeMap;

fn config(overrides: &[(&str, &str)]) -> TopicConfig {
    let map: BTreeMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TopicConfig::new(&TopicDefaults::default(), map).unwrap()
}

fn open(dir: &Path, cfg: TopicConfig, clean: bool) -> Log {
    let cp = LogCheckpoints::default();
    Log::open(dir, cfg, cp, clean, 0).unwrap().0
}

fn append(log: &mut Log, n: usize, ts: i64) -> AppendInfo {
    let b = encode_batch(n, ts, Compression::None);
    let v = validate_produce(&b, 1 << 20).unwrap();
    log.append(&b, &v, ts).unwrap()
}

/// Reads everything from `offset` and returns the offsets of the records found.
fn read_offsets(log: &Log, mut offset: i64) -> Vec<i64> {
    let mut out = Vec::new();
    while let Some(slice) = log.read(offset, 1 << 20, true).unwrap() {
        let mut bytes = slice.read().unwrap();
        let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        for set in sets {
            for r in set.records {
                if r.offset >= offset {
                    out.push(r.offset);
                }
            }
        }
        match out.last() {
            Some(last) if *last + 1 > offset => offset = *last + 1,
            _ => break,
        }
    }
    out
}

#[test]
fn appended_records_get_consecutive_offsets_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config(&[]), true);
    assert_eq!(append(&mut log, 3, 100).first_offset, 0);
    let info = append(&mut log, 5, 200);
    assert_eq!((info.first_offset, info.last_offset), (3, 7));
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(read_offsets(&log, 0), (0..8).collect::<Vec<_>>());
    assert_eq!(read_offsets(&log, 4), (4..8).collect::<Vec<_>>());
    assert!(
        log.read(8, 1000, true).unwrap().is_none(),
        "at the end: empty"
    );
    assert!(matches!(
        log.read(9, 1000, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn segments_roll_by_size_and_reads_cross_them_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "2000"), ("index.interval.bytes", "100")]);
    let mut log = open(dir.path(), cfg, true);
    for i in 0..200 {
        append(&mut log, 2, 1_000 + i);
    }
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    assert_eq!(read_offsets(&log, 0).len(), 400);
    for target in [0, 1, 57, 133, 250, 399] {
        let got = read_offsets(&log, target);
        assert_eq!(got.first(), Some(&target), "reading from {target}");
    }
    // File names are Kafka's 20-digit base offsets.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.contains(&"00000000000000000000.log".to_string()));
    assert!(names.contains(&"00000000000000000000.timeindex".to_string()));
}

#[test]
fn a_fetch_smaller_than_the_first_batch_still_gets_it_when_min_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config(&[]), true);
    append(&mut log, 50, 0);
    let s = log.read(0, 10, true).unwrap().unwrap();
    assert!(s.len > 10);
    assert!(log.read(0, 10, false).unwrap().is_none());
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "1000"), ("index.interval.bytes", "50")]);
    let mut log = open(dir.path(), cfg, true);
    // batch i holds records with timestamps 10_000 + 100*i + {0,1,2}
    for i in 0..60 {
        append(&mut log, 3, 10_000 + 100 * i);
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 10_000)));
    assert_eq!(log.offset_for_timestamp(10_001).unwrap(), Some((1, 10_001)));
    assert_eq!(
        log.offset_for_timestamp(12_050).unwrap(),
        Some((63, 12_100))
    );
    assert_eq!(
        log.offset_for_timestamp(15_902).unwrap(),
        Some((179, 15_902))
    );
    assert_eq!(log.offset_for_timestamp(15_903).unwrap(), None);
    assert_eq!(log.max_timestamp_record().unwrap(), Some((179, 15_902)));
}

#[test]
fn clean_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "1500")]);
    let mut log = open(dir.path(), cfg.clone(), true);
    for i in 0..50 {
        append(&mut log, 2, i);
    }
    log.flush_all(0).unwrap();
    drop(log);
    let log = open(dir.path(), cfg, true);
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(read_offsets(&log, 0).len(), 100);
    // batch i holds timestamps i and i+1, so 49 first appears at offset 97 (batch 48)
    assert_eq!(log.offset_for_timestamp(49).unwrap(), Some((97, 49)));
}

#[test]
fn recovery_truncates_a_torn_tail_and_rebuilds_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config(&[("index.interval.bytes", "10")]), true);
    for i in 0..10 {
        append(&mut log, 4, i);
    }
    drop(log);
    let path = dir.path().join("00000000000000000000.log");
    let len = std::fs::metadata(&path).unwrap().len();
    // A torn write: the last batch loses its final 5 bytes.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 5).unwrap();
    // The index is wiped too, as if never written.
    std::fs::write(dir.path().join("00000000000000000000.index"), b"").unwrap();
    let (log, outcomes) =
        Log::open(dir.path(), config(&[]), LogCheckpoints::default(), false, 0).unwrap();
    assert_eq!(log.log_end_offset(), 36, "the torn 10th batch is gone");
    assert!(outcomes[0].truncated_bytes > 0);
    assert_eq!(read_offsets(&log, 0), (0..36).collect::<Vec<_>>());
}

#[test]
fn recovery_stops_at_a_corrupt_batch_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "600")]);
    let mut log = open(dir.path(), cfg.clone(), true);
    for i in 0..30 {
        append(&mut log, 2, i);
    }
    let bases = log.segment_bases();
    assert!(bases.len() >= 3);
    drop(log);
    // Flip a byte inside the second segment's second batch.
    let second = dir.path().join(segment::file_name(bases[1], ".log"));
    let mut bytes = std::fs::read(&second).unwrap();
    let first_len = 12 + i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    bytes[first_len + 70] ^= 0xff;
    std::fs::write(&second, &bytes).unwrap();
    let (log, _) = Log::open(dir.path(), cfg, LogCheckpoints::default(), false, 0).unwrap();
    assert_eq!(
        log.segment_count(),
        2,
        "segments after the corrupt one are dropped"
    );
    assert_eq!(log.log_end_offset(), bases[1] + 2);
    let offsets = read_offsets(&log, 0);
    assert_eq!(offsets, (0..bases[1] + 2).collect::<Vec<_>>());
}

#[test]
fn retention_by_bytes_and_time_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "1000"), ("retention.bytes", "2500")]);
    let mut log = open(dir.path(), cfg, true);
    for i in 0..100 {
        append(&mut log, 2, i);
    }
    let before = log.segment_count();
    let deleted = log.enforce_retention(1000).unwrap();
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    assert!(log.size_bytes() <= 2500 + 1000);
    assert_eq!(log.log_start_offset(), log.segment_bases()[0]);
    assert!(matches!(
        log.read(0, 100, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    let cfg = config(&[("segment.bytes", "1000"), ("retention.ms", "500")]);
    log.set_config(cfg);
    let end = log.log_end_offset();
    log.enforce_retention(10_000).unwrap();
    assert_eq!(log.segment_count(), 1, "all expired: rolled and deleted");
    assert_eq!(log.log_start_offset(), end);
    assert_eq!(log.log_end_offset(), end, "offsets keep counting");
}

#[test]
fn delete_records_moves_the_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config(&[("segment.bytes", "500")]), true);
    for i in 0..40 {
        append(&mut log, 2, i);
    }
    assert_eq!(log.delete_records_before(33).unwrap(), 33);
    assert_eq!(read_offsets(&log, 33)[0], 33);
    assert!(log.read(32, 100, true).is_err());
    assert!(log.delete_records_before(81).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Whatever the batch sizes and the point a crash cuts the file at, recovery keeps
    /// exactly the batches that were whole, and every kept offset reads back.
    #[test]
    fn recovery_keeps_exactly_the_whole_batches(sizes in proptest::collection::vec(1usize..20, 1..30), cut in 0u64..5000) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), config(&[("index.interval.bytes", "64")]), true);
        let mut ends = Vec::new();
        let mut pos = 0u64;
        for (i, n) in sizes.iter().enumerate() {
            let b = encode_batch(*n, i as i64, Compression::None);
            pos += b.len() as u64;
            let v = validate_produce(&b, 1 << 20).unwrap();
            let info = log.append(&b, &v, 0).unwrap();
            ends.push((pos, info.last_offset + 1));
        }
        drop(log);
        let path = dir.path().join("00000000000000000000.log");
        let len = std::fs::metadata(&path).unwrap().len();
        let keep = len.saturating_sub(cut);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(keep).unwrap();
        let expected_end = ends.iter().rev().find(|(p, _)| *p <= keep).map(|(_, o)| *o).unwrap_or(0);
        let (log, _) = Log::open(dir.path(), config(&[]), LogCheckpoints::default(), false, 0).unwrap();
        proptest::prop_assert_eq!(log.log_end_offset(), expected_end);
        proptest::prop_assert_eq!(read_offsets(&log, 0), (0..expected_end).collect::<Vec<_>>());
    }
}

#[test]
fn reads_from_the_recent_batches_in_memory_agree_with_the_file() {
    // 40 batches of 1-3 records with an index entry per batch at most every 300 bytes: the
    // last 16 batches are answered from memory, the rest through the index and the file.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("index.interval.bytes", "300")]);
    let mut log = open(dir.path(), cfg.clone(), true);
    for i in 0..40 {
        append(&mut log, 1 + i % 3, i as i64);
    }
    let end = log.log_end_offset();
    log.flush_all(0).unwrap();
    let copy = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
    }
    let from_disk = open(copy.path(), cfg, true);
    for offset in 0..end {
        for max in [1usize, 100, 1 << 20] {
            let a = log
                .read(offset, max, true)
                .unwrap()
                .map(|s| (s.position, s.len));
            let b = from_disk
                .read(offset, max, true)
                .unwrap()
                .map(|s| (s.position, s.len));
            assert_eq!(a, b, "offset {offset}, max {max}");
        }
    }
    assert_eq!(read_offsets(&log, 0), (0..end).collect::<Vec<_>>());
    // The index entries, kept in memory while appending, reached the file at the flush.
    let idx = std::fs::metadata(dir.path().join("00000000000000000000.index"))
        .unwrap()
        .len();
    // (a batch is at least 70 bytes, so an entry comes at least every 5 batches)
    assert!(idx >= 8 * 8, "{idx} bytes of index for 40 batches");
}

#[test]
fn the_active_segment_reserves_space_ahead_and_gives_it_back() {
    // (Needs a filesystem with fallocate: ext4, xfs, btrfs, tmpfs all have it.)
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "100000")]);
    let seg = |base: i64| dir.path().join(segment::file_name(base, ".log"));
    // (length, bytes allocated on disk, rounded up to whole blocks)
    let usage = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.len(), m.blocks() * 512, m.len().div_ceil(4096) * 4096)
    };
    let mut log = open(dir.path(), cfg.clone(), true);
    append(&mut log, 10, 0);
    let (len, allocated, _) = usage(&seg(0));
    assert!(len > 0);
    assert!(
        allocated >= len + 60 * 1024,
        "active segment: {allocated} bytes allocated for {len}"
    );
    // Rolling gives the first segment's reservation back; the new one reserves.
    while log.segment_count() < 2 {
        append(&mut log, 10, 0);
    }
    let (len, allocated, whole_blocks) = usage(&seg(0));
    assert!(len > 50_000, "{len}");
    assert!(
        allocated <= whole_blocks,
        "closed: {allocated} allocated for {len}"
    );
    let second = log.log_end_offset() - 10;
    let (len2, allocated2, _) = usage(&seg(second));
    assert!(allocated2 >= len2 + 60 * 1024, "{allocated2} for {len2}");
    // Closing the log gives the active segment's back; reopening reserves again, and
    // the records read back as they were.
    drop(log);
    let (len2, allocated2, whole_blocks2) = usage(&seg(second));
    assert!(
        allocated2 <= whole_blocks2,
        "after close: {allocated2} for {len2}"
    );
    let mut log = open(dir.path(), cfg.clone(), true);
    let end = log.log_end_offset();
    append(&mut log, 10, 0);
    let (len2, allocated2, _) = usage(&seg(second));
    assert!(
        allocated2 >= len2 + 60 * 1024,
        "reopened: {allocated2} for {len2}"
    );
    assert_eq!(read_offsets(&log, 0), (0..end + 10).collect::<Vec<_>>());
    // A crash (no close) leaves the reservation; the next start gives it back when the
    // segment is closed, even without an append.
    std::mem::forget(log);
    let log = open(dir.path(), cfg.clone(), true);
    let (len2, allocated2, _) = usage(&seg(second));
    assert!(
        allocated2 >= len2 + 60 * 1024,
        "after a crash: {allocated2} for {len2}"
    );
    drop(log);
    let (len2, allocated2, whole_blocks2) = usage(&seg(second));
    assert!(
        allocated2 <= whole_blocks2,
        "closed after a crash: {allocated2} for {len2}"
    );
}
