//! Record batches (message format v2): header parsing and validation.
//!
//! A batch is stored byte-for-byte as the producer sent it; only `baseOffset` and
//! `partitionLeaderEpoch` are patched, and the CRC does not cover them.

use bytes::{Buf, Bytes};

/// Size of the v2 batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Structurally broken: short, bad length, bad CRC, bad record encoding.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// Well-formed but not acceptable (wrong magic, offsets not sequential, ...).
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// A CreateTime outside `message.timestamp.before/after.max.ms` of the broker's clock.
    #[error("{0}")]
    InvalidTimestamp(String),
    /// A codec the request's version predates (zstd before Produce v7).
    #[error("{0}")]
    UnsupportedCompression(String),
    /// Larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge {
        /// Batch size.
        size: usize,
        /// Limit.
        max: usize,
    },
}

/// The fixed fields of a v2 record batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the `batchLength` field.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Format version; 2 for all batches Runnel accepts.
    pub magic: i8,
    /// CRC32C from `attributes` to the end.
    pub crc: u32,
    /// Compression (bits 0-2), timestamp type (3), transactional (4), control (5).
    pub attributes: i16,
    /// Last record's offset minus `base_offset`.
    pub last_offset_delta: i32,
    /// First record's timestamp.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Producer id, -1 when not idempotent.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// First sequence number.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses a header from at least [`HEADER_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<Self, BatchError> {
        if b.len() < HEADER_LEN {
            return Err(BatchError::Corrupt(format!(
                "batch header needs {HEADER_LEN} bytes, got {}",
                b.len()
            )));
        }
        let mut c = b;
        let h = BatchHeader {
            base_offset: c.get_i64(),
            batch_length: c.get_i32(),
            partition_leader_epoch: c.get_i32(),
            magic: c.get_i8(),
            crc: c.get_u32(),
            attributes: c.get_i16(),
            last_offset_delta: c.get_i32(),
            base_timestamp: c.get_i64(),
            max_timestamp: c.get_i64(),
            producer_id: c.get_i64(),
            producer_epoch: c.get_i16(),
            base_sequence: c.get_i32(),
            records_count: c.get_i32(),
        };
        Ok(h)
    }

    /// Whole batch size on disk, including the 12-byte offset/length prefix.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }

    /// Whether the batch carries LogAppendTime timestamps.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    /// Whether this is a control batch (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }
}

/// Reads the `(base_offset, batch_length)` prefix; `None` if fewer than 12 bytes.
pub fn read_prefix(b: &[u8]) -> Option<(i64, i32)> {
    if b.len() < LOG_OVERHEAD {
        return None;
    }
    let mut c = b;
    Some((c.get_i64(), c.get_i32()))
}

/// Computes the CRC32C a batch should carry.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Checks one batch's framing, magic and CRC (no record decoding). Used by recovery.
pub fn check_batch(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::Corrupt(format!(
            "batch length {} is below the minimum {}",
            h.batch_length,
            HEADER_LEN - LOG_OVERHEAD
        )));
    }
    if h.total_size() != batch.len() {
        return Err(BatchError::Corrupt(format!(
            "batch length {} does not match the {} bytes given",
            h.total_size(),
            batch.len()
        )));
    }
    if h.magic != 2 {
        return Err(BatchError::Invalid(format!(
            "message format v{} is not supported; v2 is required",
            h.magic
        )));
    }
    let crc = compute_crc(batch);
    if crc != h.crc {
        return Err(BatchError::Corrupt(format!(
            "CRC mismatch: stored {:#010x}, computed {crc:#010x}",
            h.crc
        )));
    }
    if h.records_count < 0 || h.last_offset_delta < 0 {
        return Err(BatchError::Corrupt(
            "negative record count or offset delta".into(),
        ));
    }
    Ok(h)
}

/// One record's fields that the broker needs (timestamp lookups, validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// Offset delta from the batch's base offset.
    pub offset_delta: i32,
    /// Absolute timestamp.
    pub timestamp: i64,
    /// Whether the key is not null.
    pub has_key: bool,
}

// The record walk reads plain byte slices: `Bytes::split_to` per record would bump an
// atomic reference count each time (7.8% of the broker's CPU under ProducerPerformance).
/// Reads a zig-zag varint. Most in a batch (lengths, deltas) take one or two bytes:
/// those are decoded without the loop.
#[inline(always)]
fn get_varint(buf: &mut &[u8]) -> Result<i64, BatchError> {
    let unzigzag = |v: u64| ((v >> 1) as i64) ^ -((v & 1) as i64);
    match **buf {
        [b0, ref rest @ ..] if b0 < 0x80 => {
            *buf = rest;
            Ok(unzigzag(b0 as u64))
        }
        [b0, b1, ref rest @ ..] if b1 < 0x80 => {
            *buf = rest;
            Ok(unzigzag((b0 & 0x7f) as u64 | (b1 as u64) << 7))
        }
        _ => get_varint_long(buf),
    }
}

fn get_varint_long(buf: &mut &[u8]) -> Result<i64, BatchError> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some((&b, rest)) = buf.split_first() else {
            return Err(BatchError::Corrupt("truncated varint".into()));
        };
        *buf = rest;
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            // zig-zag decode
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(BatchError::Corrupt("varint too long".into()))
}

#[inline(always)]
fn skip_bytes_field(buf: &mut &[u8], what: &str) -> Result<(), BatchError> {
    let len = get_varint(buf)?;
    if len < -1 {
        return Err(BatchError::Corrupt(format!("negative {what} length {len}")));
    }
    if len > 0 {
        if (len as usize) > buf.len() {
            return Err(BatchError::Corrupt(format!("{what} overruns its record")));
        }
        *buf = &buf[len as usize..];
    }
    Ok(())
}

/// Decompresses a batch's records section according to its codec.
fn records_section(batch: &Bytes, h: &BatchHeader) -> Result<Bytes, BatchError> {
    match h.compression() {
        0 => Ok(batch.slice(HEADER_LEN..)),
        c => runnel_api::codec::decompress(check_codec(c)?, &batch[HEADER_LEN..]).map_err(corrupt),
    }
}

/// Hands a batch's records section to `f`, decompressed (when it is) into memory reused
/// per thread: validation only reads it, the batch is stored as it came.
fn with_records_section<R>(
    batch: &Bytes,
    h: &BatchHeader,
    f: impl FnOnce(&[u8]) -> Result<R, BatchError>,
) -> Result<R, BatchError> {
    match h.compression() {
        0 => f(&batch[HEADER_LEN..]),
        c => runnel_api::codec::with_decompressed(check_codec(c)?, &batch[HEADER_LEN..], f)
            .map_err(corrupt)?,
    }
}

fn check_codec(c: i16) -> Result<u8, BatchError> {
    match c {
        1..=4 => Ok(c as u8),
        c => Err(BatchError::Invalid(format!(
            "unknown compression codec {c}"
        ))),
    }
}

fn corrupt(e: runnel_api::codec::CodecError) -> BatchError {
    BatchError::Corrupt(format!("cannot decompress records: {e}"))
}

/// Decodes every record's offset delta and timestamp, checking the record encoding.
pub fn records(batch: &Bytes) -> Result<Vec<RecordInfo>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let mut out = Vec::with_capacity(h.records_count.clamp(0, 1 << 16) as usize);
    walk_records(batch, &h, |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// Checks the encoding of every record of a batch (whose header is `h`) and hands each
/// one's offset delta and timestamp to `visit`, without collecting them.
fn walk_records(
    batch: &Bytes,
    h: &BatchHeader,
    visit: impl FnMut(RecordInfo) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    with_records_section(batch, h, |section| walk_section(section, h, visit))
}

/// [`walk_records`] over a records section already decompressed.
fn walk_section(
    section: &[u8],
    h: &BatchHeader,
    mut visit: impl FnMut(RecordInfo) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut body: &[u8] = section;
    for _ in 0..h.records_count {
        let len = get_varint(&mut body)?;
        if len < 0 || len as usize > body.len() {
            return Err(BatchError::Corrupt(format!(
                "record length {len} overruns the batch"
            )));
        }
        let (mut rec, rest) = body.split_at(len as usize);
        body = rest;
        // attributes
        let Some((_, after)) = rec.split_first() else {
            return Err(BatchError::Corrupt("empty record".into()));
        };
        rec = after;
        let ts_delta = get_varint(&mut rec)?;
        let offset_delta = get_varint(&mut rec)?;
        let has_key = !rec.is_empty() && rec[0] != 0x01;
        skip_bytes_field(&mut rec, "key")?;
        skip_bytes_field(&mut rec, "value")?;
        let headers = get_varint(&mut rec)?;
        if headers < 0 {
            return Err(BatchError::Corrupt("negative header count".into()));
        }
        for _ in 0..headers {
            let klen = get_varint(&mut rec)?;
            if klen < 0 || klen as usize > rec.len() {
                return Err(BatchError::Corrupt("header key overruns its record".into()));
            }
            rec = &rec[klen as usize..];
            skip_bytes_field(&mut rec, "header value")?;
        }
        if !rec.is_empty() {
            return Err(BatchError::Corrupt(format!(
                "{} stray bytes at the end of a record",
                rec.len()
            )));
        }
        visit(RecordInfo {
            offset_delta: i32::try_from(offset_delta)
                .map_err(|_| BatchError::Corrupt("offset delta out of range".into()))?,
            timestamp: h.base_timestamp.saturating_add(ts_delta),
            has_key,
        })?;
    }
    if !body.is_empty() {
        return Err(BatchError::Corrupt(format!(
            "{} bytes after the last of {} records",
            body.len(),
            h.records_count
        )));
    }
    Ok(())
}

/// Where one record lies in a batch's (decompressed) records section, and what the
/// log cleaner needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpan {
    /// The record's bytes, its length varint included: `section[start..end]`.
    pub start: usize,
    /// End of the record's bytes.
    pub end: usize,
    /// Where the record's body (after its length) starts.
    pub body: usize,
    /// Where what follows the timestamp delta starts.
    pub after_timestamp: usize,
    /// Offset delta from the batch's base offset.
    pub offset_delta: i32,
    /// Absolute timestamp (the batch's own for LogAppendTime is not applied here).
    pub timestamp: i64,
    /// The key's bytes, `None` for a null key.
    pub key: Option<(usize, usize)>,
    /// A null value: a tombstone.
    pub tombstone: bool,
}

/// The records section of a stored batch, decompressed.
pub fn decompressed_records(batch: &Bytes, h: &BatchHeader) -> Result<Bytes, BatchError> {
    records_section(batch, h)
}

/// Splits a decompressed records section into records (see [`RecordSpan`]).
pub fn record_spans(section: &[u8], h: &BatchHeader) -> Result<Vec<RecordSpan>, BatchError> {
    let mut out = Vec::with_capacity(h.records_count.clamp(0, 1 << 16) as usize);
    let mut body: &[u8] = section;
    for _ in 0..h.records_count {
        let start = section.len() - body.len();
        let len = get_varint(&mut body)?;
        if len < 0 || len as usize > body.len() {
            return Err(BatchError::Corrupt(format!(
                "record length {len} overruns the batch"
            )));
        }
        let (rec, rest) = body.split_at(len as usize);
        body = rest;
        let end = section.len() - body.len();
        let body_at = end - rec.len();
        let Some((_, mut rec)) = rec.split_first() else {
            return Err(BatchError::Corrupt("empty record".into()));
        };
        let ts_delta = get_varint(&mut rec)?;
        let after_timestamp = end - rec.len();
        let offset_delta = i32::try_from(get_varint(&mut rec)?)
            .map_err(|_| BatchError::Corrupt("offset delta out of range".into()))?;
        let at = |r: &[u8]| end - r.len();
        let klen = get_varint(&mut rec)?;
        let key = if klen < 0 {
            None
        } else if klen as usize > rec.len() {
            return Err(BatchError::Corrupt("key overruns its record".into()));
        } else {
            let k = (at(rec), at(rec) + klen as usize);
            rec = &rec[klen as usize..];
            Some(k)
        };
        let vlen = get_varint(&mut rec)?;
        out.push(RecordSpan {
            start,
            end,
            body: body_at,
            after_timestamp,
            offset_delta,
            timestamp: h.base_timestamp.saturating_add(ts_delta),
            key,
            tombstone: vlen < 0,
        });
    }
    Ok(out)
}

/// Attribute bit of a batch of a transaction.
pub const TRANSACTIONAL: i16 = 0x10;

/// Attribute bit of a control batch (a transaction marker).
pub const CONTROL: i16 = 0x20;

/// Attribute bit of a batch whose base timestamp holds the time after which the log
/// cleaner may drop its tombstones (KIP-534).
pub const DELETE_HORIZON: i16 = 0x40;

/// Writes a zig-zag varint.
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8 & 0x7f) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

/// A batch like `h` holding only `records` (whole encoded records, in order, taken from
/// its records section), compressed with the batch's own codec. Offsets, sequence,
/// producer and base timestamp stay as they were, so the records keep their offsets
/// and the producer's state reads the same; `count` 0 gives the empty batch Kafka keeps
/// for a producer's last write.
pub fn rebuild_batch(h: &BatchHeader, records: &[u8], count: i32, max_timestamp: i64) -> Vec<u8> {
    rebuild_batch_at_level(h, records, count, max_timestamp, None)
}

/// As [`rebuild_batch`], compressing at `level` (`None`: the codec's default).
fn rebuild_batch_at_level(
    h: &BatchHeader,
    records: &[u8],
    count: i32,
    max_timestamp: i64,
    level: Option<i32>,
) -> Vec<u8> {
    use bytes::BufMut;
    let mut body = Vec::with_capacity(records.len() + HEADER_LEN);
    let compressed = match h.compression() {
        _ if count == 0 => Ok(()),
        c @ 1..=4 => runnel_api::codec::compress_at_level(c as u8, level, records, &mut body),
        _ => {
            body.put_slice(records);
            Ok(())
        }
    };
    let mut attributes = h.attributes;
    if count == 0 {
        // An empty batch has no records section to decompress.
        attributes &= !0x07;
    }
    if compressed.is_err() {
        // In-memory codecs do not fail; if one does, the records are kept uncompressed.
        body.clear();
        body.put_slice(records);
        attributes &= !0x07;
    }
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.put_i64(h.base_offset);
    b.put_i32((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32);
    b.put_i32(h.partition_leader_epoch);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(attributes);
    b.put_i32(h.last_offset_delta);
    b.put_i64(h.base_timestamp);
    b.put_i64(max_timestamp);
    b.put_i64(h.producer_id);
    b.put_i16(h.producer_epoch);
    b.put_i32(h.base_sequence);
    b.put_i32(count);
    b.extend_from_slice(&body);
    let crc = compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The codec a topic's `compression.type` asks the broker to store (`None` for
/// `producer`: each batch as its producer compressed it).
pub fn target_codec(compression_type: &str) -> Option<i16> {
    match compression_type {
        "uncompressed" => Some(0),
        "gzip" => Some(1),
        "snappy" => Some(2),
        "lz4" => Some(3),
        "zstd" => Some(4),
        _ => None,
    }
}

/// A validated produce payload with every batch stored in `codec`, as Kafka recompresses
/// when a topic's `compression.type` names another codec than the producer used; `None`
/// when every batch already uses it. Records, offsets, timestamps and the producer's id,
/// epoch and sequence stay as they were.
pub fn recompress(
    payload: &Bytes,
    batches: &[ValidatedBatch],
    codec: i16,
    level: Option<i32>,
) -> Result<Option<Bytes>, BatchError> {
    if batches.iter().all(|b| b.header.compression() == codec) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(payload.len());
    for b in batches {
        let batch = payload.slice(b.start..b.start + b.header.total_size());
        if b.header.compression() == codec {
            out.extend_from_slice(&batch);
            continue;
        }
        let section = records_section(&batch, &b.header)?;
        let mut h = b.header;
        h.attributes = (h.attributes & !0x07) | codec;
        out.extend_from_slice(&rebuild_batch_at_level(
            &h,
            &section,
            h.records_count,
            h.max_timestamp,
            level,
        ));
    }
    Ok(Some(Bytes::from(out)))
}

/// What validation learned about one produced batch.
#[derive(Debug, Clone, Copy)]
pub struct ValidatedBatch {
    /// Its header.
    pub header: BatchHeader,
    /// Start of the batch within the produce payload.
    pub start: usize,
}

/// Limits a produced batch must respect.
#[derive(Debug, Clone, Copy)]
pub struct ProduceLimits {
    /// `max.message.bytes`.
    pub max_message_bytes: usize,
    /// Accepted CreateTime range `[min, max]` (None: any, e.g. for LogAppendTime topics).
    pub timestamps: Option<(i64, i64)>,
    /// Every record needs a key (a compacted topic).
    pub keys_required: bool,
}

/// The checks Kafka makes of a partition's records before validating them (its
/// `ProduceRequest.validateRecords`): magic 2, no zstd before Produce v7
/// (UNSUPPORTED_COMPRESSION_TYPE), and exactly one batch per partition. An empty,
/// truncated or malformed payload passes here and is refused by [`validate_produce_with`].
pub fn check_produce_shape(payload: &[u8], version: i16) -> Result<(), BatchError> {
    let Some((_, len)) = read_prefix(payload) else {
        return Ok(());
    };
    if payload.len() <= ATTRIBUTES_OFFSET + 1 || len < 0 {
        return Ok(());
    }
    if payload[MAGIC_OFFSET] != 2 {
        return Err(BatchError::Invalid(format!(
            "Produce requests with version {version} are only allowed to contain record batches with magic version 2"
        )));
    }
    let attributes =
        i16::from_be_bytes([payload[ATTRIBUTES_OFFSET], payload[ATTRIBUTES_OFFSET + 1]]);
    if version < 7 && attributes & 0x07 == 4 {
        return Err(BatchError::UnsupportedCompression(format!(
            "Produce requests with version {version} are not allowed to use ZStandard compression"
        )));
    }
    let first = LOG_OVERHEAD + len as usize;
    let rest = payload.get(first..).unwrap_or_default();
    // A second batch counts once it is whole; a cut-off tail is left to validation.
    if let Some((_, next)) = read_prefix(rest)
        && next >= 0
        && LOG_OVERHEAD + next as usize <= rest.len()
    {
        return Err(BatchError::Invalid(format!(
            "Produce requests with version {version} are only allowed to contain exactly one record batch per partition"
        )));
    }
    Ok(())
}

/// Validates a Produce payload with only a size limit.
pub fn validate_produce(
    payload: &Bytes,
    max_message_bytes: usize,
) -> Result<Vec<ValidatedBatch>, BatchError> {
    validate_produce_with(
        payload,
        &ProduceLimits {
            max_message_bytes,
            timestamps: None,
            keys_required: false,
        },
    )
}

/// Validates a Produce payload (one or more batches) as Kafka's log validator does:
/// framing, magic 2, CRC32C, record count and sequential offset deltas, size limit, and
/// CreateTime bounds.
pub fn validate_produce_with(
    payload: &Bytes,
    limits: &ProduceLimits,
) -> Result<Vec<ValidatedBatch>, BatchError> {
    let max_message_bytes = limits.max_message_bytes;
    let mut out = Vec::new();
    let mut pos = 0usize;
    if payload.is_empty() {
        return Err(BatchError::Invalid(
            "produce request carries no record batch".into(),
        ));
    }
    while pos < payload.len() {
        let rest = &payload[pos..];
        let (_, len) = read_prefix(rest)
            .ok_or_else(|| BatchError::Corrupt("truncated batch prefix".into()))?;
        if len < 0 || LOG_OVERHEAD + len as usize > rest.len() {
            return Err(BatchError::Corrupt(format!(
                "batch length {len} overruns the {} bytes left",
                rest.len()
            )));
        }
        let size = LOG_OVERHEAD + len as usize;
        if rest.len() > MAGIC_OFFSET && rest[MAGIC_OFFSET] != 2 {
            return Err(BatchError::Invalid(format!(
                "produce requests must use message format v2, got v{}",
                rest[MAGIC_OFFSET]
            )));
        }
        if size > max_message_bytes {
            return Err(BatchError::TooLarge {
                size,
                max: max_message_bytes,
            });
        }
        let batch = payload.slice(pos..pos + size);
        let header = check_batch(&batch)?;
        if header.is_control() {
            return Err(BatchError::Invalid(
                "clients may not produce control batches".into(),
            ));
        }
        if header.records_count == 0 {
            return Err(BatchError::Invalid("batch has no records".into()));
        }
        // Offset deltas must run 0, 1, 2, ...; CreateTime timestamps must be in range.
        // The encoding of every record is checked first (CORRUPT_MESSAGE, which clients
        // retry), then deltas (INVALID_RECORD), then timestamps (INVALID_TIMESTAMP), as
        // Kafka's validator reports them, though all in one walk.
        let bounds = limits.timestamps.filter(|_| !header.is_log_append_time());
        let mut next = 0i32;
        let mut bad_delta: Option<BatchError> = None;
        let mut bad_timestamp: Option<BatchError> = None;
        let mut keyless = false;
        walk_records(&batch, &header, |r| {
            keyless |= limits.keys_required && !r.has_key;
            if r.offset_delta != next && bad_delta.is_none() {
                bad_delta = Some(BatchError::Invalid(format!(
                    "record {next} has offset delta {}, expected {next}",
                    r.offset_delta
                )));
            }
            if let Some((min, max)) = bounds
                && (r.timestamp < min || r.timestamp > max)
                && bad_timestamp.is_none()
            {
                bad_timestamp = Some(BatchError::InvalidTimestamp(format!(
                    "Timestamp {} of message with offset {} is out of range. The timestamp should be within [{min}, {max}]",
                    r.timestamp, r.offset_delta
                )));
            }
            next += 1;
            Ok(())
        })?;
        if let Some(e) = bad_delta.or(bad_timestamp) {
            return Err(e);
        }
        if keyless {
            return Err(BatchError::Invalid(
                "Compacted topic cannot accept message without key".into(),
            ));
        }
        if header.last_offset_delta != header.records_count - 1 {
            return Err(BatchError::Invalid(format!(
                "last offset delta {} does not match {} records",
                header.last_offset_delta, header.records_count
            )));
        }
        out.push(ValidatedBatch { header, start: pos });
        pos += size;
    }
    Ok(out)
}

/// Rewrites `baseOffset` and `partitionLeaderEpoch` of a batch in place.
pub fn patch_offsets(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Stamps LogAppendTime into a batch: sets the timestamp-type bit and `maxTimestamp`,
/// then recomputes the CRC (which covers both).
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attrs = i16::from_be_bytes([batch[21], batch[22]]) | 0x08;
    batch[21..23].copy_from_slice(&attrs.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The CRC field of a batch.
pub fn crc_of(batch: &[u8]) -> u32 {
    u32::from_be_bytes([
        batch[CRC_OFFSET],
        batch[CRC_OFFSET + 1],
        batch[CRC_OFFSET + 2],
        batch[CRC_OFFSET + 3],
    ])
}

/// Marks a built batch transactional (attribute bit 4) and recomputes its CRC.
pub fn set_transactional(batch: &mut [u8]) {
    let attrs = i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]])
        | TRANSACTIONAL;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attrs.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Control record type of an ABORT marker.
pub const MARKER_ABORT: i16 = 0;
/// Control record type of a COMMIT marker.
pub const MARKER_COMMIT: i16 = 1;

/// A transaction marker: a control batch of one record whose key is (version 0, type)
/// and whose value is (version 0, coordinator epoch). Offsets are assigned on append.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    use bytes::BufMut;
    let mut record = Vec::with_capacity(17);
    // length 16 (zigzag 0x20), attributes, timestamp delta, offset delta, key length 4
    record.extend_from_slice(&[0x20, 0, 0, 0, 0x08]);
    record.put_i16(0);
    record.put_i16(if commit { MARKER_COMMIT } else { MARKER_ABORT });
    record.push(0x0c); // value length 6
    record.put_i16(0);
    record.put_i32(coordinator_epoch);
    record.push(0); // no headers
    let mut b = Vec::with_capacity(HEADER_LEN + record.len());
    b.put_i64(0);
    b.put_i32((HEADER_LEN - LOG_OVERHEAD + record.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(0x30); // transactional | control
    b.put_i32(0);
    b.put_i64(timestamp);
    b.put_i64(timestamp);
    b.put_i64(producer_id);
    b.put_i16(producer_epoch);
    b.put_i32(-1);
    b.put_i32(1);
    b.extend_from_slice(&record);
    let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The marker type of a control batch, from the bytes of its first record (what follows
/// the 61-byte header). `None` if they do not hold a control record.
pub fn control_type(mut rec: &[u8]) -> Option<i16> {
    fn varint(b: &mut &[u8]) -> Option<i64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        None
    }
    varint(&mut rec)?; // length
    rec = rec.get(1..)?; // attributes
    varint(&mut rec)?; // timestamp delta
    varint(&mut rec)?; // offset delta
    if varint(&mut rec)? < 4 {
        return None;
    }
    let key = rec.get(..4)?;
    Some(i16::from_be_bytes([key[2], key[3]]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// A zig-zag varint as the protocol writes it (test-local reference encoder).
    fn zigzag_varint(v: i64) -> Vec<u8> {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if u < 0x80 {
                out.push(u as u8);
                return out;
            }
            out.push((u as u8 & 0x7f) | 0x80);
            u >>= 7;
        }
    }

    proptest::proptest! {
        #[test]
        fn varints_decode_as_encoded_and_leave_what_follows(v: i64, tail: Vec<u8>) {
            let mut bytes = zigzag_varint(v);
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            let mut buf = &bytes[..];
            proptest::prop_assert_eq!(get_varint(&mut buf).unwrap(), v);
            proptest::prop_assert_eq!(buf, &bytes[len..]);
            // Cut short anywhere, it is an error, never a wrong value.
            for cut in 0..len {
                let mut short = &bytes[..cut];
                proptest::prop_assert!(get_varint(&mut short).is_err());
            }
        }
    }

    /// Encodes a batch with the protocol crate (as a producer would).
    pub fn encode_batch(n: usize, ts: i64, compression: Compression) -> Bytes {
        encode_records(
            (0..n as i64).map(|i| {
                let (k, v) = (format!("k{i}"), format!("value-{i}"));
                (i, ts + i, Some(Bytes::from(k)), Some(Bytes::from(v)))
            }),
            compression,
        )
    }

    /// Encodes one batch of (offset, timestamp, key, value) records with the protocol
    /// crate; offsets need not be consecutive.
    fn encode_records(
        records: impl Iterator<Item = (i64, i64, Option<Bytes>, Option<Bytes>)>,
        compression: Compression,
    ) -> Bytes {
        let records: Vec<Record> = records
            .map(|(offset, timestamp, key, value)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset,
                // the encoder groups records whose offset - sequence is constant
                sequence: offset as i32 - 1,
                timestamp,
                key,
                value,
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn valid_batches_pass_under_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encode_batch(7, 1_000, c);
            let v = validate_produce(&b, 1 << 20).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].header.records_count, 7);
            let recs = records(&b).unwrap();
            assert_eq!(recs[6].timestamp, 1_006);
        }
    }

    #[test]
    fn markers_are_control_batches_the_protocol_crate_reads() {
        for commit in [true, false] {
            let b = control_batch(77, 3, commit, 5, 1_700_000_000_000);
            let h = check_batch(&b).expect("valid marker");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.records_count),
                (77, 3, 1)
            );
            let want = if commit { MARKER_COMMIT } else { MARKER_ABORT };
            assert_eq!(control_type(&b[HEADER_LEN..]), Some(want));
            let mut bytes = Bytes::from(b);
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                .expect("crate decodes the marker");
            let r = &set.records[0];
            assert!(r.control && r.transactional);
            let key = r.key.as_ref().expect("marker key");
            assert_eq!(&key[..], &[0, 0, 0, want as u8]);
            let value = r.value.as_ref().expect("marker value");
            assert_eq!(&value[..], &[0, 0, 0, 0, 0, 5]);
        }
    }

    #[test]
    fn a_flipped_byte_is_a_crc_error() {
        let b = encode_batch(3, 0, Compression::None);
        let mut m = b.to_vec();
        let last = m.len() - 1;
        m[last] ^= 0xff;
        let err = validate_produce(&Bytes::from(m), 1 << 20).unwrap_err();
        assert!(
            matches!(err, BatchError::Corrupt(ref s) if s.contains("CRC")),
            "{err}"
        );
    }

    /// `m` with its CRC recomputed, as a producer with a bug would send it.
    fn with_fixed_crc(mut m: Vec<u8>) -> Bytes {
        let crc = crc32c::crc32c(&m[21..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(m)
    }

    #[test]
    fn undecodable_compressed_records_are_corrupt_and_unknown_codecs_invalid() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let good = encode_batch(200, 0, codec).to_vec();
            assert!(validate_produce(&Bytes::from(good.clone()), 1 << 20).is_ok());
            // Damage inside the compressed section, under a CRC that matches it.
            let mut m = good.clone();
            let at = HEADER_LEN + (m.len() - HEADER_LEN) / 2;
            m[at] ^= 0x5a;
            m[at + 1] ^= 0xa5;
            let err = validate_produce(&with_fixed_crc(m), 1 << 20).unwrap_err();
            assert!(matches!(err, BatchError::Corrupt(_)), "{codec:?}: {err}");
            // Cut short.
            let mut m = good.clone();
            m.truncate(m.len() - 7);
            let len = (m.len() - 12) as i32;
            m[8..12].copy_from_slice(&len.to_be_bytes());
            let err = validate_produce(&with_fixed_crc(m), 1 << 20).unwrap_err();
            assert!(matches!(err, BatchError::Corrupt(_)), "{codec:?}: {err}");
        }
        let mut m = encode_batch(2, 0, Compression::Lz4).to_vec();
        m[22] = (m[22] & !0x07) | 6; // attributes: codec 6
        let err = validate_produce(&with_fixed_crc(m), 1 << 20).unwrap_err();
        assert!(
            matches!(err, BatchError::Invalid(ref s) if s.contains("codec 6")),
            "{err}"
        );
    }

    #[test]
    fn recompression_changes_the_codec_and_nothing_else() {
        let limits = ProduceLimits {
            max_message_bytes: 1 << 20,
            timestamps: None,
            keys_required: false,
        };
        for (from, to) in [
            (Compression::Lz4, 4),
            (Compression::None, 3),
            (Compression::Zstd, 0),
            (Compression::Snappy, 1),
            (Compression::Gzip, 2),
        ] {
            let mut m = encode_batch(300, 1_700_000_000_000, from).to_vec();
            // An idempotent producer's batch: its id, epoch and sequence must survive.
            m[43..51].copy_from_slice(&77i64.to_be_bytes());
            m[51..53].copy_from_slice(&3i16.to_be_bytes());
            m[53..57].copy_from_slice(&1200i32.to_be_bytes());
            let payload = with_fixed_crc(m);
            let batches = validate_produce_with(&payload, &limits).expect("valid");
            let out = recompress(&payload, &batches, to, None)
                .expect("recompresses")
                .expect("the codec differs");
            let again = validate_produce_with(&out, &limits).expect("still valid");
            let (a, b) = (batches[0].header, again[0].header);
            assert_eq!(b.compression(), to);
            assert_eq!(
                (b.producer_id, b.producer_epoch, b.base_sequence),
                (77, 3, 1200)
            );
            assert_eq!(
                (
                    a.base_timestamp,
                    a.max_timestamp,
                    a.records_count,
                    a.last_offset_delta
                ),
                (
                    b.base_timestamp,
                    b.max_timestamp,
                    b.records_count,
                    b.last_offset_delta
                )
            );
            assert_eq!(a.attributes & !0x07, b.attributes & !0x07);
            assert_eq!(
                decompressed_records(&payload, &a).expect("old"),
                decompressed_records(&out, &b).expect("new")
            );
            // Already in the topic's codec: kept as sent.
            assert!(recompress(&out, &again, to, None).expect("ok").is_none());
        }
        assert_eq!(target_codec("producer"), None);
        assert_eq!(target_codec("uncompressed"), Some(0));
        assert_eq!(target_codec("zstd"), Some(4));
    }

    #[test]
    fn oversized_batch_is_rejected_with_its_size() {
        let b = encode_batch(50, 0, Compression::None);
        let err = validate_produce(&b, 100).unwrap_err();
        assert!(matches!(err, BatchError::TooLarge { max: 100, .. }));
    }

    #[test]
    fn create_times_outside_the_window_are_invalid_timestamps() {
        let b = encode_batch(3, 1_000, Compression::Gzip);
        let limits = |lo, hi| ProduceLimits {
            max_message_bytes: 1 << 20,
            timestamps: Some((lo, hi)),
            keys_required: false,
        };
        assert!(validate_produce_with(&b, &limits(1_000, 1_002)).is_ok());
        assert!(matches!(
            validate_produce_with(&b, &limits(1_001, 5_000)),
            Err(BatchError::InvalidTimestamp(_))
        ));
        assert!(matches!(
            validate_produce_with(&b, &limits(0, 1_001)),
            Err(BatchError::InvalidTimestamp(_))
        ));
    }

    #[test]
    fn a_corrupt_record_outranks_bad_deltas_and_timestamps_as_in_kafka() {
        let limits = ProduceLimits {
            max_message_bytes: 1 << 20,
            timestamps: Some((1_001, 5_000)),
            keys_required: false,
        };
        // Record 0's timestamp (1,000) is out of range and two stray bytes follow the
        // last record (length and CRC fixed up): CORRUPT_MESSAGE, which clients retry.
        let mut m = encode_batch(3, 1_000, Compression::None).to_vec();
        m.extend_from_slice(&[0, 0]);
        let len = (m.len() - LOG_OVERHEAD) as i32;
        m[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = compute_crc(&m);
        m[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let err = validate_produce_with(&Bytes::from(m), &limits).unwrap_err();
        assert!(matches!(err, BatchError::Corrupt(_)), "{err}");
        // Offset deltas 0, 2, 3 and an out-of-range timestamp: the delta is reported.
        let v = || Some(Bytes::from_static(b"v"));
        let b = encode_records(
            [0i64, 2, 3].into_iter().map(|o| (o, 1_000, None, v())),
            Compression::None,
        );
        let err = validate_produce_with(&b, &limits).unwrap_err();
        assert!(
            matches!(err, BatchError::Invalid(ref s) if s.contains("offset delta 2, expected 1")),
            "{err}"
        );
    }

    #[test]
    fn old_magic_is_invalid() {
        let mut m = encode_batch(1, 0, Compression::None).to_vec();
        m[MAGIC_OFFSET] = 1;
        assert!(matches!(
            validate_produce(&Bytes::from(m), 1 << 20),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn patching_offsets_keeps_the_crc_valid() {
        let mut m = encode_batch(2, 0, Compression::Lz4).to_vec();
        patch_offsets(&mut m, 12345, 7);
        let h = check_batch(&m).unwrap();
        assert_eq!(
            (h.base_offset, h.partition_leader_epoch, h.last_offset()),
            (12345, 7, 12346)
        );
    }

    #[test]
    fn log_append_time_stamp_keeps_the_batch_valid() {
        let mut m = encode_batch(2, 5, Compression::None).to_vec();
        stamp_log_append_time(&mut m, 99_999);
        let h = check_batch(&m).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_999);
    }

    proptest::proptest! {
        #[test]
        fn truncated_or_mangled_payloads_never_panic(cut in 0usize..200, flip in 0usize..200) {
            let b = encode_batch(4, 0, Compression::None);
            let mut m = b.to_vec();
            if flip < m.len() { m[flip] ^= 0x5a; }
            m.truncate(cut.min(m.len()));
            let _ = validate_produce(&Bytes::from(m), 1 << 20);
        }
    }
}
