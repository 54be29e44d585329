//! Micro-benchmarks of the produce/fetch hot path: batch validation (CRC, record walk,
//! decompression), offset-index lookup, and request decoding; of a log cleaner pass; and
//! of the consumer's decoding of fetched batches.
//!
//! `cargo bench -p runnel-broker --bench micro`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use runnel_api::Compression;
use runnel_api::records::BatchBuilder;
use runnel_broker::config::{TopicConfig, TopicDefaults};
use runnel_broker::log::batch::{ProduceLimits, validate_produce_with};
use runnel_broker::log::cleaner::{build_offset_map, write_group};
use runnel_broker::log::index::OffsetIndex;
use runnel_broker::log::{Log, LogCheckpoints};

/// A batch of `n` records of `size` bytes, as a producer would send it: values of one
/// repeated byte, or (`text`) words picked at random, log-like text that LZ4 and zstd
/// shrink about 2-3x (random letters, as ProducerPerformance sends, leave LZ4 nothing to
/// do but store its blocks).
fn batch(n: usize, size: usize, codec: Compression, text: bool) -> Bytes {
    const WORDS: [&str; 16] = [
        "alpha ", "broker ", "commit ", "delta ", "epoch ", "fetch ", "group ", "header ",
        "index ", "join ", "kafka ", "leader ", "member ", "node ", "offset ", "produce ",
    ];
    let mut b = BatchBuilder::new();
    let mut x: u32 = 7;
    for i in 0..n {
        let value: Vec<u8> = if text {
            let mut v = Vec::with_capacity(size + 8);
            while v.len() < size {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                v.extend_from_slice(WORDS[((x >> 16) % 16) as usize].as_bytes());
            }
            v.truncate(size);
            v
        } else {
            vec![b'x'; size]
        };
        b.append(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    b.build(codec, -1, -1, -1)
}

fn validation(c: &mut Criterion) {
    let limits = ProduceLimits {
        max_message_bytes: 1 << 20,
        timestamps: None,
        keys_required: false,
    };
    let mut g = c.benchmark_group("validate_batch");
    for (name, n, size, codec, text) in [
        ("64KiB_100B_none", 600, 100, Compression::None, false),
        ("64KiB_1KiB_none", 62, 1024, Compression::None, false),
        ("64KiB_100B_lz4", 600, 100, Compression::Lz4, false),
        ("64KiB_100B_zstd", 600, 100, Compression::Zstd, false),
        ("64KiB_1KiB_text_lz4", 62, 1024, Compression::Lz4, true),
        ("64KiB_1KiB_text_zstd", 62, 1024, Compression::Zstd, true),
    ] {
        let payload = batch(n, size, codec, text);
        g.throughput(Throughput::Bytes((n * size) as u64));
        g.bench_function(name, |b| {
            b.iter(|| validate_produce_with(black_box(&payload), &limits).expect("valid"))
        });
    }
    g.finish();
}

fn index_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut idx = OffsetIndex::open(&dir.path().join("0.index"), 0, false).expect("index opens");
    // A full 10 MiB index: 1.3M entries, one per 4 KiB of log.
    let entries = 10 * 1024 * 1024 / 8;
    for i in 0..entries {
        idx.append(i * 40, (i as u64) * 4096).expect("append");
    }
    idx.cache().expect("cache");
    let mut g = c.benchmark_group("offset_index");
    let mut probe = 0i64;
    g.bench_function("lookup_in_1.3M_entries", |b| {
        b.iter(|| {
            probe = (probe + 7_919 * 40) % (entries * 40);
            idx.lookup(black_box(probe)).expect("lookup")
        })
    });
    // The same index as a closed segment's: not held in memory (in the page cache).
    let closed = OffsetIndex::open(&dir.path().join("0.index"), 0, false).expect("reopens");
    g.bench_function("lookup_in_1.3M_entries_closed_segment", |b| {
        b.iter(|| {
            probe = (probe + 7_919 * 40) % (entries * 40);
            closed.lookup(black_box(probe)).expect("lookup")
        })
    });
    g.finish();
}

fn request_decoding(c: &mut Criterion) {
    // A Produce v9 request for 6 partitions with a 64 KiB batch each.
    let payload = batch(600, 100, Compression::None, false);
    let req = ProduceRequest::default().with_acks(1).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(
                (0..6)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(payload.clone()))
                    })
                    .collect(),
            ),
    ]);
    let mut buf = BytesMut::new();
    req.encode(&mut buf, 9).expect("encodes");
    let frame = buf.freeze();
    let mut g = c.benchmark_group("decode_request");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("produce_v9_6x64KiB", |b| {
        b.iter(|| {
            let mut f = frame.clone();
            ProduceRequest::decode(black_box(&mut f), 9).expect("decodes")
        })
    });
    g.finish();
}

/// One cleaner pass over 66 MiB: 200,000 distinct 36-byte keys, each written 3 times
/// with a 64-byte value, 600 records a batch. The copy is written and thrown away, so
/// every iteration cleans the same log.
fn cleaner_pass(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = TopicConfig::new(
        &TopicDefaults::default(),
        [
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .expect("config");
    let mut log = Log::open(dir.path(), cfg, LogCheckpoints::default(), true, 0)
        .expect("log opens")
        .0;
    let (keys, rounds, per_batch) = (200_000usize, 3usize, 600usize);
    let value = vec![b'v'; 64];
    let mut bytes = 0u64;
    for _ in 0..rounds {
        for chunk in (0..keys).collect::<Vec<_>>().chunks(per_batch) {
            let mut b = BatchBuilder::new();
            for k in chunk {
                let key = format!("{k:08x}-0000-4000-8000-{:012x}", 0);
                b.append(1_000, Some(&key.as_bytes()[..36]), Some(&value), &[]);
            }
            let payload = b.build(Compression::None, -1, -1, -1);
            bytes += payload.len() as u64;
            let v = validate_produce_with(
                &payload,
                &ProduceLimits {
                    max_message_bytes: 1 << 20,
                    timestamps: None,
                    keys_required: true,
                },
            )
            .expect("valid");
            log.append(&payload, &v, 1_000).expect("append");
        }
    }
    log.roll(1_000).expect("roll");
    log.flush_all(1_000).expect("flush");
    let mut g = c.benchmark_group("log_cleaner");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("pass_600k_records_200k_keys", |b| {
        b.iter(|| {
            let mut plan = log.cleaning_plan(2_000).expect("dirty");
            let map = build_offset_map(&mut plan, 128 << 20).expect("map");
            for group in plan.groups() {
                let (seg, _) = write_group(&mut plan, &map, &group, 2_000).expect("copy");
                seg.discard_cleaned().expect("discard");
            }
            map.len()
        })
    });
    g.finish();
}

/// Decompressing a 64 KiB records section of text: Runnel's codec path against
/// kafka-protocol's generic one, which validation and the consumer used before.
fn decompression(c: &mut Criterion) {
    use kafka_protocol::compression::{Decompressor, Lz4, Zstd};
    let mut g = c.benchmark_group("decompress_64KiB_text");
    for (name, codec) in [("lz4", Compression::Lz4), ("zstd", Compression::Zstd)] {
        let b = batch(62, 1024, codec, true);
        let section = b.slice(61..);
        let id = if name == "lz4" { 3 } else { 4 };
        let plain = runnel_api::codec::decompress(id, &section).expect("decodes");
        g.throughput(Throughput::Bytes(plain.len() as u64));
        g.bench_function(format!("{name}_runnel"), |bch| {
            bch.iter(|| {
                runnel_api::codec::with_decompressed(id, black_box(&section), |d| d.len())
                    .expect("decodes")
            })
        });
        g.bench_function(format!("{name}_runnel_owned"), |bch| {
            bch.iter(|| runnel_api::codec::decompress(id, black_box(&section)).expect("decodes"))
        });
        if id == 3 {
            // The same records in LZ4's high-compression mode (level 4, as kafka-protocol's
            // encoder writes; Runnel's writes no content checksum).
            let mut frame = Vec::new();
            runnel_api::codec::compress_at_level(3, Some(4), &plain, &mut frame).expect("lz4");
            let frame = Bytes::from(frame);
            g.bench_function("lz4_runnel_hc4_frame", |bch| {
                bch.iter(|| {
                    runnel_api::codec::with_decompressed(3, black_box(&frame), |d| d.len())
                        .expect("decodes")
                })
            });
        }
        g.bench_function(format!("{name}_kafka_protocol"), |bch| {
            bch.iter(|| {
                let mut src = black_box(section.clone());
                let take = |x: &mut Bytes| Ok(std::mem::take(x));
                if id == 3 {
                    Lz4::decompress(&mut src, take).expect("decodes")
                } else {
                    Zstd::decompress(&mut src, take).expect("decodes")
                }
            })
        });
    }
    g.finish();
}

/// The consumer's side of a fetch: 1 MiB of fetched batches (64 KiB each, as producers
/// send them) decoded into records, with the CRC check a consumer makes by default.
fn consumer_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("consumer_decode_1MiB");
    for (name, n, size) in [("1KiB_records", 62, 1024), ("100B_records", 600, 100)] {
        let mut fetched = BytesMut::new();
        let mut offset = 0i64;
        while fetched.len() + 66_000 < 1 << 20 {
            let mut b = batch(n, size, Compression::None, true).to_vec();
            b[0..8].copy_from_slice(&offset.to_be_bytes());
            offset += n as i64;
            fetched.extend_from_slice(&b);
        }
        let fetched = fetched.freeze();
        g.throughput(Throughput::Bytes(fetched.len() as u64));
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let d = runnel_api::records::decode_committed_partial(
                    black_box(fetched.clone()),
                    true,
                    &[],
                );
                assert!(d.error.is_none());
                d.decoded.records.len()
            })
        });
    }
    g.finish();
}

criterion_group!(
    micro,
    validation,
    decompression,
    index_lookup,
    request_decoding,
    cleaner_pass,
    consumer_decode
);
criterion_main!(micro);
