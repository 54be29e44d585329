//! Record batches (message format v2) as a client writes and reads them.
//!
//! Written here rather than with the protocol crate's record types because a Kafka record
//! may carry the same header key twice, which a map cannot hold; the codecs themselves
//! (gzip, snappy, lz4, zstd) come from the protocol crate.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A record header: a key and an optional value. Keys may repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value (`None` is a null value).
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// Compression codecs, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// `none`.
    #[default]
    None,
    /// `gzip`.
    Gzip,
    /// `snappy`.
    Snappy,
    /// `lz4`.
    Lz4,
    /// `zstd`.
    Zstd,
}

impl Compression {
    /// The codec id in a batch's attributes.
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Parses `none`, `gzip`, `snappy`, `lz4`, `zstd` (and `uncompressed`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// Errors decoding record batches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record batch: {0}")]
pub struct RecordsError(pub String);

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Reads a zig-zag varint from `buf` at `*pos` and moves `*pos` past it; the one- and
/// two-byte ones without the loop.
#[inline(always)]
fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i64, RecordsError> {
    let unzigzag = |v: u64| ((v >> 1) as i64) ^ -((v & 1) as i64);
    let rest = buf.get(*pos..).unwrap_or_default();
    let (value, used) = match *rest {
        [b0, ..] if b0 < 0x80 => (unzigzag(b0 as u64), 1),
        [b0, b1, ..] if b1 < 0x80 => (unzigzag((b0 & 0x7f) as u64 | (b1 as u64) << 7), 2),
        _ => return read_varint_long(buf, pos),
    };
    *pos += used;
    Ok(value)
}

fn read_varint_long(buf: &[u8], pos: &mut usize) -> Result<i64, RecordsError> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(RecordsError("truncated varint".into()));
        };
        *pos += 1;
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(RecordsError("varint too long".into()))
}

/// Reads a length-prefixed field of `buf` at `*pos`: where its bytes lie (`None` for a
/// null field, length -1), with `*pos` moved past them.
#[inline(always)]
fn read_field(buf: &[u8], pos: &mut usize) -> Result<Option<std::ops::Range<usize>>, RecordsError> {
    let len = read_varint(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    if len as usize > buf.len() - *pos {
        return Err(RecordsError("field overruns its record".into()));
    }
    let start = *pos;
    *pos += len as usize;
    Ok(Some(start..*pos))
}

/// Bytes of the record batch v2 header (base offset to records count), before its
/// records.
pub const BATCH_HEADER_BYTES: usize = 61;
const HEADER: usize = BATCH_HEADER_BYTES;

/// Builds one record batch, appending records' encoded bytes as they arrive.
#[derive(Debug)]
pub struct BatchBuilder {
    /// Room for the header, then the encoded records: an uncompressed batch is finished
    /// in place, without copying its records.
    records: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty batch with room for `bytes` of records before it reallocates (a producer
    /// gives `batch.size`).
    pub fn with_capacity(bytes: usize) -> Self {
        Self::reusing(BytesMut::new(), bytes)
    }

    /// Like [`BatchBuilder::with_capacity`], in `buffer`'s memory (its contents are
    /// discarded): a producer hands back the buffers of batches it has finished with.
    pub fn reusing(mut buffer: BytesMut, bytes: usize) -> Self {
        buffer.clear();
        buffer.reserve(HEADER + bytes);
        let mut records = buffer;
        records.put_bytes(0, HEADER);
        Self {
            records,
            count: 0,
            base_timestamp: 0,
            max_timestamp: -1,
        }
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Uncompressed size so far, header included.
    pub fn size_bytes(&self) -> usize {
        self.records.len()
    }

    /// Bytes one more record would add (an estimate good to a few bytes).
    pub fn record_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
        let mut n =
            1 + 10 + 5 + 5 + key.map_or(0, |k| k.len()) + 5 + value.map_or(0, |v| v.len()) + 5;
        for h in headers {
            n += 10 + h.key.len() + h.value.as_ref().map_or(0, |v| v.len());
        }
        n
    }

    /// The exact bytes `append` would add for this record (the fit check before it).
    pub fn appended_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        let base = if self.count == 0 {
            timestamp
        } else {
            self.base_timestamp
        };
        let body = Self::body_len(timestamp - base, self.count as i64, key, value, headers);
        varint_len(body as i64) + body
    }

    fn body_len(
        ts_delta: i64,
        offset_delta: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        let field_len = |b: Option<&[u8]>| match b {
            Some(b) => varint_len(b.len() as i64) + b.len(),
            None => varint_len(-1),
        };
        let mut body_len =
            1 + varint_len(ts_delta) + varint_len(offset_delta) + field_len(key) + field_len(value);
        body_len += varint_len(headers.len() as i64);
        for h in headers {
            body_len +=
                varint_len(h.key.len() as i64) + h.key.len() + field_len(h.value.as_deref());
        }
        body_len
    }

    /// Appends a record.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp - self.base_timestamp;
        let offset_delta = self.count as i64;
        let body_len = Self::body_len(ts_delta, offset_delta, key, value, headers);
        let r = &mut self.records;
        r.reserve(body_len + 5);
        put_varint(r, body_len as i64);
        r.put_i8(0);
        put_varint(r, ts_delta);
        put_varint(r, offset_delta);
        for f in [key, value] {
            match f {
                Some(b) => {
                    put_varint(r, b.len() as i64);
                    r.put_slice(b);
                }
                None => put_varint(r, -1),
            }
        }
        put_varint(r, headers.len() as i64);
        for h in headers {
            put_varint(r, h.key.len() as i64);
            r.put_slice(h.key.as_bytes());
            match &h.value {
                Some(v) => {
                    put_varint(r, v.len() as i64);
                    r.put_slice(v);
                }
                None => put_varint(r, -1),
            }
        }
        self.count += 1;
    }

    /// Encodes the batch: header, CRC32C, records compressed with `compression`.
    pub fn build(
        &self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Bytes {
        self.build_with(
            compression,
            producer_id,
            producer_epoch,
            base_sequence,
            false,
        )
    }

    /// As [`BatchBuilder::build`]; `transactional` sets the batch's transactional flag.
    pub fn build_with(
        &self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        transactional: bool,
    ) -> Bytes {
        self.build_leveled(
            compression,
            None,
            (producer_id, producer_epoch, base_sequence),
            transactional,
        )
    }

    fn build_leveled(
        &self,
        compression: Compression,
        level: Option<i32>,
        producer: (i64, i16, i32),
        transactional: bool,
    ) -> Bytes {
        let mut b = match compression {
            Compression::None => self.records[..].to_vec(),
            c => {
                let raw = &self.records[HEADER..];
                let mut out = Vec::with_capacity(HEADER + raw.len() / 2 + 64);
                out.resize(HEADER, 0);
                match crate::codec::compress_at_level(c.id() as u8, level, raw, &mut out) {
                    Ok(()) => out,
                    // Codecs compressing in memory do not fail; if one ever does, the batch
                    // goes out uncompressed rather than not at all.
                    Err(_) => {
                        return self.build_leveled(
                            Compression::None,
                            None,
                            producer,
                            transactional,
                        );
                    }
                }
            }
        };
        let attributes = compression.id() | if transactional { 0x10 } else { 0 };
        self.write_header(&mut b, attributes, producer);
        Bytes::from(b)
    }

    /// As [`BatchBuilder::build_with`], consuming the builder: an uncompressed batch is
    /// finished in the builder's own buffer (no copy of its records).
    pub fn into_batch(
        self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        transactional: bool,
    ) -> Bytes {
        self.into_batch_at_level(
            compression,
            None,
            (producer_id, producer_epoch, base_sequence),
            transactional,
        )
    }

    /// As [`BatchBuilder::into_batch`], compressing at `level` (`compression.<codec>.level`;
    /// `None`: the codec's default); `producer` is (producer id, epoch, base sequence).
    pub fn into_batch_at_level(
        mut self,
        compression: Compression,
        level: Option<i32>,
        producer: (i64, i16, i32),
        transactional: bool,
    ) -> Bytes {
        if compression != Compression::None {
            return self.build_leveled(compression, level, producer, transactional);
        }
        let mut b = std::mem::take(&mut self.records);
        let attributes = if transactional { 0x10 } else { 0 };
        self.write_header(&mut b, attributes, producer);
        b.freeze()
    }

    /// Fills the header room at the front of `b` (whose records follow it) and the CRC;
    /// `producer` is (producer id, epoch, base sequence).
    fn write_header(&self, b: &mut [u8], attributes: i16, producer: (i64, i16, i32)) {
        let (producer_id, producer_epoch, base_sequence) = producer;
        let records_len = b.len() - HEADER;
        let mut h = &mut b[..HEADER];
        h.put_i64(0); // base offset: the broker assigns it
        h.put_i32((49 + records_len) as i32);
        h.put_i32(-1); // partition leader epoch
        h.put_i8(2); // magic
        h.put_u32(0); // crc, patched below
        h.put_i16(attributes);
        h.put_i32(self.count - 1);
        h.put_i64(self.base_timestamp);
        h.put_i64(self.max_timestamp);
        h.put_i64(producer_id);
        h.put_i16(producer_epoch);
        h.put_i32(base_sequence);
        h.put_i32(self.count);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

/// A copy of a finished batch (`batch`, from [`BatchBuilder::into_batch`]) with another
/// producer id, epoch and base sequence, and its CRC recomputed; `None` if `batch` is too
/// short to be one.
pub fn restamp_producer(
    batch: &[u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Option<Bytes> {
    if batch.len() < HEADER {
        return None;
    }
    let mut b = BytesMut::from(batch);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Some(b.freeze())
}

/// The producer id a finished batch carries (-1 if it is too short).
pub fn batch_producer_id(batch: &[u8]) -> i64 {
    batch
        .get(43..51)
        .and_then(|b| b.try_into().ok())
        .map_or(-1, i64::from_be_bytes)
}

/// The number of records a finished batch says it holds (0 if it is too short).
pub fn batch_record_count(batch: &[u8]) -> i32 {
    batch
        .get(57..61)
        .map_or(0, |c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Offset.
    pub offset: i64,
    /// Timestamp (CreateTime, or LogAppendTime when the batch says so).
    pub timestamp: i64,
    /// Whether `timestamp` is the broker's LogAppendTime.
    pub log_append_time: bool,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<Header>,
}

/// What a fetch's record bytes held.
#[derive(Debug, Default)]
pub struct DecodedBatches {
    /// Data records, in offset order.
    pub records: Vec<DecodedRecord>,
    /// Offset after the last complete batch (control batches included), if any.
    pub next_offset: Option<i64>,
}

/// Where one v2 batch lies at the start of a fetch's record bytes.
struct BatchFrame {
    base_offset: i64,
    last_offset: i64,
    /// Header and records.
    len: usize,
}

/// The batch `bytes` starts with, from its header alone; `None` when it is cut short (a
/// fetch ends at `max.bytes` mid-batch).
fn batch_frame(bytes: &[u8]) -> Result<Option<BatchFrame>, RecordsError> {
    if bytes.len() < 12 {
        return Ok(None);
    }
    let base_offset = i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let batch_len = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if batch_len < 0 {
        return Err(RecordsError(format!("negative batch length {batch_len}")));
    }
    let len = 12 + batch_len as usize;
    if len > bytes.len() {
        return Ok(None);
    }
    if len < 61 {
        return Err(RecordsError("batch shorter than its header".into()));
    }
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(RecordsError(format!("unsupported message format v{magic}")));
    }
    let last_offset_delta = i32::from_be_bytes(bytes[23..27].try_into().expect("4 bytes"));
    Ok(Some(BatchFrame {
        base_offset,
        last_offset: base_offset + last_offset_delta as i64,
        len,
    }))
}

/// The offset after the last complete batch in `bytes`, read from the batch headers
/// only (no CRC, no records): where the next fetch can start while these are decoded.
/// Stops before a malformed header, which decoding then reports.
pub fn batches_end(bytes: &[u8]) -> Option<i64> {
    let (mut at, mut end) = (0, None);
    while let Ok(Some(frame)) = batch_frame(&bytes[at..]) {
        end = Some(frame.last_offset + 1);
        at += frame.len;
    }
    end
}

/// Decodes every complete batch in `bytes`; a partial batch at the end (a fetch cut by
/// `max.bytes`) is ignored. With `check_crc`, a bad CRC is an error.
pub fn decode_batches(bytes: Bytes, check_crc: bool) -> Result<DecodedBatches, RecordsError> {
    decode_committed(bytes, check_crc, &[])
}

/// As [`decode_batches`] for a `read_committed` fetch: records of the aborted
/// transactions the broker listed (producer id, first offset) are dropped, up to each
/// one's ABORT marker.
pub fn decode_committed(
    bytes: Bytes,
    check_crc: bool,
    aborted: &[(i64, i64)],
) -> Result<DecodedBatches, RecordsError> {
    let partial = decode_committed_partial(bytes, check_crc, aborted);
    match partial.error {
        Some(bad) => Err(bad.error),
        None => Ok(partial.decoded),
    }
}

/// The first batch [`decode_committed_partial`] could not read.
#[derive(Debug)]
pub struct BadBatch {
    /// Its base offset.
    pub base_offset: i64,
    /// The offset after it, when its header could be read: where to seek to skip it.
    pub end: Option<i64>,
    /// What is wrong with it.
    pub error: RecordsError,
}

/// What [`decode_committed_partial`] read before a batch it could not.
#[derive(Debug, Default)]
pub struct PartialDecode {
    /// The batches before the first bad one, whole (`next_offset` is where it starts).
    pub decoded: DecodedBatches,
    /// The first batch that could not be read.
    pub error: Option<BadBatch>,
}

/// How many records the whole batches in `bytes` say they hold (each count capped), read
/// from their headers: room for them is made once instead of by doubling.
fn records_hint(bytes: &[u8]) -> usize {
    let (mut pos, mut n) = (0usize, 0usize);
    while let Some(h) = bytes.get(pos..pos + 61) {
        let len = i32::from_be_bytes(h[8..12].try_into().expect("4 bytes"));
        if len < 49 || pos + 12 + len as usize > bytes.len() {
            break;
        }
        let count = i32::from_be_bytes(h[57..61].try_into().expect("4 bytes"));
        n += count.clamp(0, 1 << 16) as usize;
        pos += 12 + len as usize;
    }
    n.min(1 << 20)
}

/// As [`decode_committed`], keeping the records of the batches before the first one that
/// fails (a bad CRC, a malformed record): a consumer hands those out before the error.
pub fn decode_committed_partial(
    mut bytes: Bytes,
    check_crc: bool,
    aborted: &[(i64, i64)],
) -> PartialDecode {
    let mut out = PartialDecode::default();
    out.decoded.records.reserve(records_hint(&bytes));
    let mut upcoming: Vec<(i64, i64)> = aborted.to_vec();
    upcoming.sort_by_key(|a| std::cmp::Reverse(a.1));
    let mut aborting: std::collections::HashSet<i64> = std::collections::HashSet::new();
    while bytes.len() >= 12 {
        let base_offset = i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let frame = match batch_frame(&bytes) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                out.error = Some(BadBatch {
                    base_offset,
                    end: None,
                    error,
                });
                break;
            }
        };
        let end = frame.last_offset + 1;
        let (kept, next) = (out.decoded.records.len(), out.decoded.next_offset);
        let batch = bytes.split_to(frame.len);
        let d = &mut out.decoded;
        if let Err(error) = decode_batch(batch, frame, check_crc, &mut upcoming, &mut aborting, d) {
            out.decoded.records.truncate(kept);
            out.decoded.next_offset = next;
            out.error = Some(BadBatch {
                base_offset,
                end: Some(end),
                error,
            });
            break;
        }
    }
    out
}

/// Appends one batch's data records to `out` (none for a control batch or one of an
/// aborted transaction) and moves `out.next_offset` past it.
fn decode_batch(
    mut batch: Bytes,
    frame: BatchFrame,
    check_crc: bool,
    upcoming: &mut Vec<(i64, i64)>,
    aborting: &mut std::collections::HashSet<i64>,
    out: &mut DecodedBatches,
) -> Result<(), RecordsError> {
    let base_offset = frame.base_offset;
    if check_crc {
        let stored = u32::from_be_bytes(batch[17..21].try_into().expect("4 bytes"));
        if crc32c::crc32c(&batch[21..]) != stored {
            return Err(RecordsError(format!(
                "CRC mismatch in batch at offset {base_offset}"
            )));
        }
    }
    batch.advance(21);
    let attributes = batch.get_i16();
    batch.advance(4); // last offset delta, read with the frame
    let base_timestamp = batch.get_i64();
    let max_timestamp = batch.get_i64();
    let producer_id = batch.get_i64();
    batch.advance(2 + 4); // epoch, base sequence
    let count = batch.get_i32();
    let last_offset = frame.last_offset;
    out.next_offset = Some(last_offset + 1);
    while upcoming.last().is_some_and(|a| a.1 <= last_offset) {
        if let Some((pid, _)) = upcoming.pop() {
            aborting.insert(pid);
        }
    }
    if attributes & 0x20 != 0 {
        // A control batch (transaction marker) ends that producer's aborted range.
        aborting.remove(&producer_id);
        return Ok(());
    }
    if attributes & 0x10 != 0 && aborting.contains(&producer_id) {
        return Ok(());
    }
    let log_append_time = attributes & 0x08 != 0;
    let body = match attributes & 0x07 {
        0 => batch,
        c => crate::codec::decompress(c as u8, &batch)
            .map_err(|e| RecordsError(format!("cannot decompress: {e}")))?,
    };
    // Records are read through a cursor over the section's bytes: a key or value becomes
    // a slice of `body` (one reference count taken), and nothing else is shared per record.
    let data: &[u8] = &body;
    let mut pos = 0usize;
    for _ in 0..count {
        let len = read_varint(data, &mut pos)?;
        if len < 0 || len as usize > data.len() - pos {
            return Err(RecordsError("record overruns its batch".into()));
        }
        let end = pos + len as usize;
        let r = &data[..end];
        if pos == end {
            return Err(RecordsError("empty record".into()));
        }
        let mut at = pos + 1; // attributes
        pos = end;
        let ts_delta = read_varint(r, &mut at)?;
        let offset_delta = read_varint(r, &mut at)?;
        if !(0..=last_offset - base_offset).contains(&offset_delta) {
            return Err(RecordsError(format!(
                "record offset delta {offset_delta} outside its batch (last offset delta {})",
                last_offset - base_offset
            )));
        }
        let key = read_field(r, &mut at)?.map(|k| body.slice(k));
        let value = read_field(r, &mut at)?.map(|v| body.slice(v));
        let n = read_varint(r, &mut at)?;
        let mut headers = Vec::with_capacity(n.clamp(0, 64) as usize);
        for _ in 0..n {
            let k = read_field(r, &mut at)?.map_or(&[][..], |k| &r[k]);
            let v = read_field(r, &mut at)?.map(|v| body.slice(v));
            headers.push(Header {
                key: String::from_utf8_lossy(k).into_owned(),
                value: v,
            });
        }
        out.records.push(DecodedRecord {
            offset: base_offset + offset_delta,
            timestamp: if log_append_time {
                max_timestamp
            } else {
                base_timestamp + ts_delta
            },
            log_append_time,
            key,
            value,
            headers,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_read_back_as_written_and_leave_what_follows() {
        let values = [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            -8192,
            8192,
            -8193,
            1 << 20,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ];
        for v in values {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            b.extend_from_slice(b"tail");
            let mut at = 0;
            assert_eq!(read_varint(&b, &mut at).expect("decodes"), v);
            assert_eq!(&b[at..], b"tail");
        }
        for bad in [&[0x80u8][..], &[0xff, 0xff][..], &[0xff; 11][..], &[][..]] {
            assert!(read_varint(bad, &mut 0).is_err(), "{bad:?}");
        }
        // A field's length is checked against the bytes left.
        let mut at = 0;
        assert!(read_field(&[0x06, b'a', b'b'], &mut at).is_err());
        let mut at = 0;
        assert_eq!(read_field(&[0x01, b'x'], &mut at).expect("null"), None);
        assert_eq!(
            read_field(&[0x04, b'a', b'b', b'c'], &mut 0).expect("two"),
            Some(1..3)
        );
    }
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn sample(builder: &mut BatchBuilder, n: usize) {
        for i in 0..n {
            let key = format!("k{i}");
            let value = format!("v{i}");
            builder.append(
                1000 + i as i64,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[Header::new("h", "x")],
            );
        }
    }

    #[test]
    fn uncompressed_batches_match_the_protocol_crate_byte_for_byte() {
        let mut b = BatchBuilder::new();
        sample(&mut b, 5);
        let ours = b.build(Compression::None, -1, -1, -1);
        let records: Vec<Record> = (0..5)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32 - 1,
                timestamp: 1000 + i,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                headers: [(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"x")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut theirs = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut theirs,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: kafka_protocol::records::Compression::None,
            },
        )
        .unwrap();
        assert_eq!(&ours[..], &theirs[..]);
    }

    #[test]
    fn every_codec_round_trips_with_repeated_and_null_headers() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = BatchBuilder::new();
            let headers = vec![
                Header::new("a", "1"),
                Header::new("a", "2"),
                Header {
                    key: "n".into(),
                    value: None,
                },
            ];
            b.append(5, None, Some(b"x"), &headers);
            b.append(7, Some(b"k"), None, &[]);
            let mut bytes = BytesMut::from(&b.build(c, -1, -1, -1)[..]);
            bytes[0..8].copy_from_slice(&40i64.to_be_bytes());
            let d = decode_batches(bytes.freeze(), true).unwrap();
            assert_eq!(d.records.len(), 2, "{c:?}");
            assert_eq!(d.records[0].headers, headers, "{c:?}");
            assert_eq!((d.records[1].offset, d.records[1].timestamp), (41, 7));
            assert_eq!(d.records[1].value, None);
            assert_eq!(d.next_offset, Some(42));
        }
    }

    #[test]
    fn a_partial_trailing_batch_is_ignored_and_a_bad_crc_is_reported() {
        let mut b = BatchBuilder::new();
        sample(&mut b, 3);
        let one = b.build(Compression::None, -1, -1, -1);
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one[..20]);
        assert_eq!(decode_batches(two.freeze(), true).unwrap().records.len(), 3);
        let mut bad = BytesMut::from(&one[..]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_batches(bad.freeze(), true).is_err());
    }

    #[test]
    fn batches_end_agrees_with_decoding_and_stops_at_a_partial_or_malformed_batch() {
        let mut b = BatchBuilder::new();
        sample(&mut b, 3);
        let mut first = BytesMut::from(&b.build(Compression::None, -1, -1, -1)[..]);
        let mut b = BatchBuilder::new();
        sample(&mut b, 5);
        let mut second = BytesMut::from(&b.build(Compression::Lz4, -1, -1, -1)[..]);
        first[0..8].copy_from_slice(&10i64.to_be_bytes());
        second[0..8].copy_from_slice(&13i64.to_be_bytes());
        // The second batch's CRC covers neither its base offset nor its length.
        let mut both = first.clone();
        both.extend_from_slice(&second);
        let decoded = decode_batches(both.clone().freeze(), true).unwrap();
        assert_eq!(decoded.next_offset, Some(18));
        assert_eq!(batches_end(&both), Some(18));
        let mut cut = both.clone();
        cut.extend_from_slice(&first[..30]);
        assert_eq!(
            batches_end(&cut),
            Some(18),
            "a partial batch is not counted"
        );
        assert_eq!(batches_end(&first[..first.len() - 1]), None);
        let mut bad = first.clone();
        let mut second_bad_magic = second.clone();
        second_bad_magic[16] = 1;
        bad.extend_from_slice(&second_bad_magic);
        assert_eq!(
            batches_end(&bad),
            Some(13),
            "stops before the malformed batch"
        );
        assert!(decode_batches(bad.freeze(), true).is_err());
    }

    #[test]
    fn a_record_past_its_batchs_last_offset_is_an_error_and_keeps_what_came_before() {
        let mut b = BatchBuilder::new();
        sample(&mut b, 2);
        let good = BytesMut::from(&b.build(Compression::None, -1, -1, -1)[..]);
        let mut b = BatchBuilder::new();
        sample(&mut b, 3);
        let mut short = BytesMut::from(&b.build(Compression::None, -1, -1, -1)[..]);
        // Second batch at offset 2 whose header claims two records while it holds three,
        // with a valid CRC: its header-derived end (4) would skip offset 4.
        short[0..8].copy_from_slice(&2i64.to_be_bytes());
        short[23..27].copy_from_slice(&1i32.to_be_bytes());
        let crc = crc32c::crc32c(&short[21..]);
        short[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut both = good.clone();
        both.extend_from_slice(&short);
        let partial = decode_committed_partial(both.freeze(), true, &[]);
        let bad = partial.error.expect("an error");
        assert!(bad.error.0.contains("outside its batch"), "{}", bad.error.0);
        assert_eq!((bad.base_offset, bad.end), (2, Some(4)));
        let offsets: Vec<i64> = partial.decoded.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 1], "the good batch before it is kept");
        assert_eq!(partial.decoded.next_offset, Some(2));
    }

    /// Every byte of a records section set to a varint's edge values, with a valid CRC:
    /// decoding either reads records or reports the batch, and never panics.
    #[test]
    fn damaged_records_with_a_valid_crc_are_an_error_never_a_panic() {
        let mut b = BatchBuilder::new();
        sample(&mut b, 3);
        let good = b.build(Compression::None, -1, -1, -1);
        let expected = decode_batches(good.clone(), true).expect("good").records;
        let mut errors = 0;
        for at in HEADER..good.len() {
            for v in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = BytesMut::from(&good[..]);
                bad[at] = v;
                let crc = crc32c::crc32c(&bad[21..]);
                bad[17..21].copy_from_slice(&crc.to_be_bytes());
                match decode_batches(bad.freeze(), true) {
                    Ok(d) => assert!(d.records.len() <= expected.len()),
                    Err(_) => errors += 1,
                }
            }
        }
        assert!(errors > 0, "some damage must be reported");
        // Cut short, with the batch length saying so: each cut is an error.
        for cut in HEADER + 1..good.len() {
            let mut bad = BytesMut::from(&good[..cut]);
            bad[8..12].copy_from_slice(&((cut - 12) as i32).to_be_bytes());
            let crc = crc32c::crc32c(&bad[21..]);
            bad[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(decode_batches(bad.freeze(), true).is_err(), "cut at {cut}");
        }
    }
}
