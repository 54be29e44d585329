//! Micro-benchmarks of the produce/fetch hot path: batch validation (CRC, record walk,
//! decompression), offset-index lookup, and request decoding.
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
use runnel_broker::log::batch::{ProduceLimits, validate_produce_with};
use runnel_broker::log::index::OffsetIndex;

/// A batch of `n` records of `size` bytes, as a producer would send it.
fn batch(n: usize, size: usize, codec: Compression) -> Bytes {
    let mut b = BatchBuilder::new();
    let value = vec![b'x'; size];
    for i in 0..n {
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
    for (name, n, size, codec) in [
        ("64KiB_100B_none", 600, 100, Compression::None),
        ("64KiB_1KiB_none", 62, 1024, Compression::None),
        ("64KiB_100B_lz4", 600, 100, Compression::Lz4),
        ("64KiB_100B_zstd", 600, 100, Compression::Zstd),
    ] {
        let payload = batch(n, size, codec);
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
    let payload = batch(600, 100, Compression::None);
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

criterion_group!(micro, validation, index_lookup, request_decoding);
criterion_main!(micro);
