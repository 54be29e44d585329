//! Decompression of a record batch's records section, made for the data path: a broker
//! validates every compressed batch it is sent, and a consumer decodes every one it
//! fetches.
//!
//! - LZ4 (Kafka's codec 3, the LZ4 frame format) is decoded block by block straight into
//!   the output buffer, with the frame's checksums verified.
//! - zstd (codec 4) runs on a decompression context kept per thread, writing straight into
//!   the output buffer.
//! - gzip and Snappy are decoded by kafka-protocol's codecs.
//!
//! Compression ([`compress_into`]) writes what Kafka's Java client writes by default: LZ4
//! frames of independent 64 KiB blocks compressed in LZ4's fast mode, without a content
//! checksum (kafka-protocol's LZ4 uses the much slower high-compression mode), and zstd at
//! level 3 with the content size in the frame header, from a context kept per thread; or at
//! the level `compression.<codec>.level` asks for (gzip through flate2 at that level,
//! Snappy, which has none, through kafka-protocol).
//!
//! kafka-protocol's generic path for LZ4 and zstd streams through an 8 KiB copy buffer into a
//! buffer grown by doubling, and creates a new decoder (with its own buffers) for every
//! batch; on 64 KiB batches that made decompression cost several times the codec's own work.

use std::cell::RefCell;

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy};

/// A batch whose records section cannot be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(msg.into()))
}

/// Decompresses `src`, compressed with Kafka codec `codec` (a batch's attributes & 7:
/// 1 gzip, 2 Snappy, 3 LZ4, 4 zstd), and appends the result to `out`.
pub fn decompress_into(codec: u8, src: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    match decompress_at(codec, src, out, start) {
        Ok(end) => {
            out.truncate(end);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Decompresses `src` into a new buffer (which is not much larger than the result: the
/// records a consumer holds keep it alive).
pub fn decompress(codec: u8, src: &[u8]) -> Result<Bytes, CodecError> {
    let mut out = Vec::new();
    decompress_into(codec, src, &mut out)?;
    if out.capacity() > out.len() + out.len() / 2 {
        out.shrink_to_fit();
    }
    Ok(Bytes::from(out))
}

thread_local! {
    /// Memory reused by [`with_decompressed`] on this thread; its whole length is
    /// initialized, so LZ4 blocks are written into it without zeroing it first.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Scratch memory kept past this size is given back after use.
const SCRATCH_KEEP: usize = 8 << 20;

/// Decompresses `src` into memory reused per thread and hands the result to `f`, for a
/// caller that only reads the records (a broker validating a batch it stores as sent).
pub fn with_decompressed<R>(
    codec: u8,
    src: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, CodecError> {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let res = decompress_at(codec, src, &mut buf, 0).map(|end| f(&buf[..end]));
    if buf.capacity() <= SCRATCH_KEEP {
        SCRATCH.with(|s| *s.borrow_mut() = buf);
    }
    res
}

/// Decompresses `src` into `buf` from `start` (`buf.len() >= start`) and returns where the
/// result ends. `buf` may be left longer than that (its length is what is initialized).
fn decompress_at(
    codec: u8,
    src: &[u8],
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<usize, CodecError> {
    debug_assert!(buf.len() >= start);
    match codec {
        3 => match lz4_frames(src, buf, start) {
            Err(Lz4Unsupported) => generic(codec, src, buf, start),
            Ok(end) => end,
        },
        4 => zstd_frames(src, buf, start),
        1 | 2 => generic(codec, src, buf, start),
        c => fail(format!("unknown compression codec {c}")),
    }
}

/// kafka-protocol's decoder for gzip, Snappy and the LZ4 frames [`lz4_frames`] leaves to it.
fn generic(codec: u8, src: &[u8], buf: &mut Vec<u8>, start: usize) -> Result<usize, CodecError> {
    let mut input = Bytes::copy_from_slice(src);
    let take = |b: &mut Bytes| Ok(std::mem::take(b));
    let out = match codec {
        1 => Gzip::decompress(&mut input, take),
        2 => Snappy::decompress(&mut input, take),
        3 => Lz4::decompress(&mut input, take),
        c => return fail(format!("unknown compression codec {c}")),
    }
    .map_err(|e| CodecError(format!("{e:#}")))?;
    buf.truncate(start);
    buf.extend_from_slice(&out);
    Ok(buf.len())
}

// ---- LZ4 frames ----

const LZ4_MAGIC: u32 = 0x184D_2204;

/// A valid LZ4 frame this decoder leaves to the generic one: linked blocks (a block may
/// refer to the one before) or a dictionary.
struct Lz4Unsupported;

fn u32_at(src: &[u8], at: usize) -> Option<u32> {
    src.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Makes `buf[..need]` initialized (zeroing only what was not yet; the capacity grows
/// by doubling).
fn ensure_len(buf: &mut Vec<u8>, need: usize) {
    if buf.len() < need {
        buf.resize(need, 0);
    }
}

/// Decodes the LZ4 frames of `src` into `buf` from `start`; the end of the output.
fn lz4_frames(
    src: &[u8],
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<Result<usize, CodecError>, Lz4Unsupported> {
    let mut at = 0;
    let mut end = start;
    if src.is_empty() {
        return Ok(fail("empty LZ4 data"));
    }
    while at < src.len() {
        let Some(magic) = u32_at(src, at) else {
            return Ok(fail("truncated LZ4 frame header"));
        };
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            // A skippable frame: its length, then that many bytes of anything.
            let Some(len) = u32_at(src, at + 4) else {
                return Ok(fail("truncated LZ4 skippable frame"));
            };
            at += 8 + len as usize;
            if at > src.len() {
                return Ok(fail("truncated LZ4 skippable frame"));
            }
            continue;
        }
        if magic != LZ4_MAGIC {
            return Ok(fail(format!("bad LZ4 frame magic {magic:#010x}")));
        }
        match lz4_frame(&src[at..], buf, end)? {
            Ok((used, new_end)) => {
                at += used;
                end = new_end;
            }
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(end))
}

/// Decodes one LZ4 frame (`src` starts at its magic number) into `buf` from `start`: the
/// bytes of `src` it took and the end of the output.
fn lz4_frame(
    src: &[u8],
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<Result<(usize, usize), CodecError>, Lz4Unsupported> {
    let (Some(&flg), Some(&bd)) = (src.get(4), src.get(5)) else {
        return Ok(fail("truncated LZ4 frame descriptor"));
    };
    if flg >> 6 != 1 {
        return Ok(fail(format!("unsupported LZ4 frame version {}", flg >> 6)));
    }
    if flg & 0x02 != 0 || bd & 0x8F != 0 {
        return Ok(fail("reserved bits set in the LZ4 frame descriptor"));
    }
    let independent = flg & 0x20 != 0;
    let block_checksums = flg & 0x10 != 0;
    let content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;
    let dictionary = flg & 0x01 != 0;
    let block_max: usize = match (bd >> 4) & 0x07 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        n => return Ok(fail(format!("bad LZ4 block maximum size code {n}"))),
    };
    let descriptor_end = 6 + if content_size { 8 } else { 0 } + if dictionary { 4 } else { 0 };
    let Some(&hc) = src.get(descriptor_end) else {
        return Ok(fail("truncated LZ4 frame descriptor"));
    };
    if (xxh32(&src[4..descriptor_end], 0) >> 8) as u8 != hc {
        return Ok(fail("LZ4 frame descriptor checksum mismatch"));
    }
    if !independent || dictionary {
        return Err(Lz4Unsupported);
    }
    let expected_size = content_size.then(|| {
        let b = &src[6..14];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    });
    let mut at = descriptor_end + 1;
    let mut end = start;
    loop {
        let Some(word) = u32_at(src, at) else {
            return Ok(fail("truncated LZ4 frame: no end mark"));
        };
        at += 4;
        if word == 0 {
            break;
        }
        let stored = word & 0x8000_0000 != 0;
        let len = (word & 0x7FFF_FFFF) as usize;
        if len > block_max {
            return Ok(fail(format!(
                "LZ4 block of {len} bytes over the frame's maximum of {block_max}"
            )));
        }
        let Some(block) = src.get(at..at + len) else {
            return Ok(fail("truncated LZ4 block"));
        };
        at += len;
        if block_checksums {
            let Some(sum) = u32_at(src, at) else {
                return Ok(fail("truncated LZ4 block checksum"));
            };
            at += 4;
            if xxh32(block, 0) != sum {
                return Ok(fail("LZ4 block checksum mismatch"));
            }
        }
        if stored {
            ensure_len(buf, end + len);
            buf[end..end + len].copy_from_slice(block);
            end += len;
        } else {
            ensure_len(buf, end + block_max);
            match lz4::block::decompress_to_buffer(
                block,
                Some(block_max as i32),
                &mut buf[end..end + block_max],
            ) {
                Ok(n) => end += n,
                Err(e) => return Ok(fail(format!("corrupt LZ4 block: {e}"))),
            }
        }
    }
    if content_checksum {
        let Some(sum) = u32_at(src, at) else {
            return Ok(fail("truncated LZ4 content checksum"));
        };
        at += 4;
        if xxh32(&buf[start..end], 0) != sum {
            return Ok(fail("LZ4 content checksum mismatch"));
        }
    }
    if let Some(size) = expected_size
        && size != (end - start) as u64
    {
        return Ok(fail(format!(
            "LZ4 frame holds {} bytes where its header says {size}",
            end - start
        )));
    }
    Ok(Ok((at, end)))
}

const P1: u32 = 0x9E37_79B1;
const P2: u32 = 0x85EB_CA77;
const P3: u32 = 0xC2B2_AE3D;
const P4: u32 = 0x27D4_EB2F;
const P5: u32 = 0x1656_67B1;

/// XXH32, the checksum of the LZ4 frame format.
pub fn xxh32(data: &[u8], seed: u32) -> u32 {
    #[inline(always)]
    fn lane(b: &[u8]) -> u32 {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline(always)]
    fn round(acc: u32, input: u32) -> u32 {
        acc.wrapping_add(input.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    }
    let mut rest = data;
    let mut h = if data.len() >= 16 {
        let (mut v1, mut v2) = (
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
        );
        let (mut v3, mut v4) = (seed, seed.wrapping_sub(P1));
        let mut stripes = data.chunks_exact(16);
        for s in &mut stripes {
            let s: &[u8; 16] = s.try_into().expect("16 bytes");
            v1 = round(v1, lane(&s[0..4]));
            v2 = round(v2, lane(&s[4..8]));
            v3 = round(v3, lane(&s[8..12]));
            v4 = round(v4, lane(&s[12..16]));
        }
        rest = stripes.remainder();
        v1.rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u32);
    let mut words = rest.chunks_exact(4);
    for w in &mut words {
        h = h
            .wrapping_add(lane(w).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
    }
    for &b in words.remainder() {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

// ---- zstd ----

thread_local! {
    static ZSTD: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// Decodes the zstd frames of `src` into `buf` from `start` with this thread's context.
fn zstd_frames(src: &[u8], buf: &mut Vec<u8>, start: usize) -> Result<usize, CodecError> {
    use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, ResetDirective, get_error_name};
    if src.is_empty() {
        return fail("empty zstd data");
    }
    let zerr = |code: usize| CodecError(format!("zstd: {}", get_error_name(code)));
    let mut ctx = ZSTD
        .with(|z| z.borrow_mut().take())
        .map_or_else(DCtx::try_create, Some)
        .ok_or_else(|| CodecError("cannot create a zstd decompression context".into()))?;
    let result = (|| {
        ctx.reset(ResetDirective::SessionOnly).map_err(zerr)?;
        // The frame header usually says how much comes out (librdkafka's does).
        let hint = match zstd::zstd_safe::get_frame_content_size(src) {
            Ok(Some(n)) if n <= 64 << 20 => n as usize,
            _ => (src.len() * 8).clamp(256 << 10, 64 << 20),
        };
        buf.truncate(start);
        if start == 0 {
            // In one call, straight into the output, when it fits in the room guessed;
            // else (or if the data is bad) the streaming decoder below says why.
            buf.reserve(hint);
            if let Ok(n) = ctx.decompress(buf, src) {
                return Ok(n);
            }
            buf.clear();
            ctx.reset(ResetDirective::SessionOnly).map_err(zerr)?;
        }
        buf.reserve(hint);
        let mut input = InBuffer::around(src);
        let mut pos = start;
        loop {
            if buf.capacity() - pos < 16 << 10 {
                buf.reserve(buf.capacity().max(64 << 10));
            }
            let (left, written) = {
                let mut out = OutBuffer::around_pos(buf, pos);
                let left = ctx.decompress_stream(&mut out, &mut input).map_err(zerr)?;
                (left, out.pos())
            };
            let progressed = written > pos;
            pos = written;
            let input_done = input.pos() == src.len();
            if left == 0 && input_done {
                return Ok(pos);
            }
            if input_done && !progressed && pos < buf.capacity() {
                return fail("truncated zstd frame");
            }
        }
    })();
    ZSTD.with(|z| *z.borrow_mut() = Some(ctx));
    result
}

/// Compresses `src` with Kafka codec `codec` (1 gzip, 2 Snappy, 3 LZ4, 4 zstd) at the
/// codec's default level and appends the result to `out`.
pub fn compress_into(codec: u8, src: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    compress_at_level(codec, None, src, out)
}

/// Kafka's `compression.gzip.level`: -1 (zlib's default) or 1 to 9.
pub const GZIP_LEVELS: (i32, i32, i32) = (-1, 1, 9);
/// Kafka's `compression.lz4.level`: 1 to 17, default 9. The default is LZ4's fast mode (as
/// in Kafka's clients); any other level its high-compression mode at that level.
pub const LZ4_LEVELS: (i32, i32, i32) = (9, 1, 17);
/// Kafka's `compression.zstd.level`: -131072 to 22, default 3.
pub const ZSTD_LEVELS: (i32, i32, i32) = (3, -131_072, 22);

/// Whether `level` is one Kafka accepts for the codec's `compression.<codec>.level`.
pub fn level_ok(codec: u8, level: i32) -> bool {
    check_level(codec, level).is_ok()
}

/// As [`level_ok`], with what the codec accepts when it does not.
pub fn check_level(codec: u8, level: i32) -> Result<(), String> {
    let ((default, lo, hi), extra) = match codec {
        1 => (GZIP_LEVELS, true),
        3 => (LZ4_LEVELS, false),
        4 => (ZSTD_LEVELS, false),
        c => return Err(format!("codec {c} has no levels")),
    };
    if (lo..=hi).contains(&level) || (extra && level == default) {
        return Ok(());
    }
    let or_default = if extra {
        format!("{default} or ")
    } else {
        String::new()
    };
    Err(format!("expected {or_default}{lo} to {hi}"))
}

/// As [`compress_into`], at `level` (`compression.<codec>.level`; `None`: the default;
/// ignored for Snappy, which has no levels).
pub fn compress_at_level(
    codec: u8,
    level: Option<i32>,
    src: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if let Some(l) = level
        && codec != 2
        && let Err(why) = check_level(codec, l)
    {
        return fail(format!(
            "compression level {l} is out of range for codec {codec}: {why}"
        ));
    }
    let start = out.len();
    let res = match codec {
        1 => gzip_compress(src, level, out),
        2 => {
            use kafka_protocol::compression::Compressor;
            let mut tmp = bytes::BytesMut::new();
            let fill = |b: &mut bytes::BytesMut| {
                b.extend_from_slice(src);
                Ok(())
            };
            Snappy::compress(&mut tmp, fill)
                .map(|()| out.extend_from_slice(&tmp))
                .map_err(|e| CodecError(format!("{e:#}")))
        }
        3 => lz4_compress(src, level.filter(|l| *l != LZ4_LEVELS.0), out),
        4 => zstd_compress(src, level.unwrap_or(ZSTD_LEVELS.0), out),
        c => fail(format!("unknown compression codec {c}")),
    };
    if res.is_err() {
        out.truncate(start);
    }
    res
}

fn gzip_compress(src: &[u8], level: Option<i32>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    use std::io::Write;
    let level = match level {
        Some(l) if l >= 0 => flate2::Compression::new(l as u32),
        _ => flate2::Compression::default(),
    };
    let mut enc = flate2::write::GzEncoder::new(out, level);
    let err = |e: std::io::Error| CodecError(format!("gzip: {e}"));
    enc.write_all(src).map_err(err)?;
    enc.finish().map_err(err)?;
    Ok(())
}

/// An LZ4 frame of independent 64 KiB blocks, no checksums: fast mode, or high-compression
/// mode at `hc_level`.
fn lz4_compress(src: &[u8], hc_level: Option<i32>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mode = match hc_level {
        Some(l) => lz4::block::CompressionMode::HIGHCOMPRESSION(l),
        None => lz4::block::CompressionMode::DEFAULT,
    };
    const BLOCK: usize = 64 << 10;
    // FLG: version 01, independent blocks; BD: 64 KiB blocks.
    let descriptor = [0x60u8, 0x40];
    out.extend_from_slice(&LZ4_MAGIC.to_le_bytes());
    out.extend_from_slice(&descriptor);
    out.push((xxh32(&descriptor, 0) >> 8) as u8);
    for chunk in src.chunks(BLOCK) {
        let at = out.len();
        let bound =
            lz4::block::compress_bound(chunk.len()).map_err(|e| CodecError(format!("lz4: {e}")))?;
        out.resize(at + 4 + bound, 0);
        let n = lz4::block::compress_to_buffer(chunk, Some(mode), false, &mut out[at + 4..])
            .map_err(|e| CodecError(format!("lz4: {e}")))?;
        if n < chunk.len() {
            out[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
            out.truncate(at + 4 + n);
        } else {
            // Stored as it is when compressing does not make it smaller.
            out.truncate(at);
            out.extend_from_slice(&(chunk.len() as u32 | 0x8000_0000).to_le_bytes());
            out.extend_from_slice(chunk);
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    Ok(())
}

thread_local! {
    static ZSTD_C: RefCell<Option<zstd::zstd_safe::CCtx<'static>>> = const { RefCell::new(None) };
}

/// One zstd frame at `level`, with the content size in its header.
fn zstd_compress(src: &[u8], level: i32, out: &mut Vec<u8>) -> Result<(), CodecError> {
    use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
    use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, ResetDirective, get_error_name};
    let zerr = |code: usize| CodecError(format!("zstd: {}", get_error_name(code)));
    let mut ctx = ZSTD_C
        .with(|z| z.borrow_mut().take())
        .map_or_else(CCtx::try_create, Some)
        .ok_or_else(|| CodecError("cannot create a zstd compression context".into()))?;
    let result = (|| {
        ctx.reset(ResetDirective::SessionOnly).map_err(zerr)?;
        ctx.set_parameter(CParameter::CompressionLevel(level))
            .map_err(zerr)?;
        ctx.set_pledged_src_size(Some(src.len() as u64))
            .map_err(zerr)?;
        out.reserve(zstd::zstd_safe::compress_bound(src.len()));
        let mut input = InBuffer::around(src);
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(1024));
            }
            let pos = out.len();
            let mut ob = OutBuffer::around_pos(out, pos);
            let left = ctx
                .compress_stream2(&mut ob, &mut input, ZSTD_EndDirective::ZSTD_e_end)
                .map_err(zerr)?;
            if left == 0 {
                return Ok(());
            }
        }
    })();
    ZSTD_C.with(|z| *z.borrow_mut() = Some(ctx));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::compression::Zstd;

    fn sample(n: usize) -> Vec<u8> {
        // Text-like, so it compresses but not to nothing.
        let mut x: u32 = 12345;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                b'A' + ((x >> 16) % 26) as u8
            })
            .collect()
    }

    fn lz4_frame_of(data: &[u8], checksum: bool, size: lz4::BlockSize) -> Vec<u8> {
        use std::io::Write;
        let mut enc = lz4::EncoderBuilder::new()
            .block_mode(lz4::BlockMode::Independent)
            .block_size(size)
            .checksum(if checksum {
                lz4::ContentChecksum::ChecksumEnabled
            } else {
                lz4::ContentChecksum::NoChecksum
            })
            .build(Vec::new())
            .expect("encoder");
        enc.write_all(data).expect("write");
        let (out, res) = enc.finish();
        res.expect("finish");
        out
    }

    #[test]
    fn xxh32_matches_reference_vectors() {
        assert_eq!(xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(xxh32(b"a", 0), 0x550D_7456);
        assert_eq!(xxh32(b"abc", 0), 0x32D1_53FF);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition", 0),
            0xE229_3B2F
        );
    }

    #[test]
    fn lz4_frames_round_trip_with_and_without_checksums() {
        for n in [0, 1, 100, 65_536, 65_537, 300_000] {
            let data = sample(n);
            for checksum in [false, true] {
                for size in [lz4::BlockSize::Max64KB, lz4::BlockSize::Max256KB] {
                    let frame = lz4_frame_of(&data, checksum, size.clone());
                    let mut out = b"prefix".to_vec();
                    decompress_into(3, &frame, &mut out).expect("decodes");
                    assert_eq!(&out[..6], b"prefix");
                    assert_eq!(&out[6..], &data[..], "n={n} checksum={checksum}");
                    let seen = with_decompressed(3, &frame, |d| d.to_vec()).expect("decodes");
                    assert_eq!(seen, data);
                }
            }
        }
    }

    #[test]
    fn lz4_damage_is_an_error_not_wrong_data() {
        let data = sample(200_000);
        let frame = lz4_frame_of(&data, true, lz4::BlockSize::Max64KB);
        // Truncated anywhere: an error.
        for cut in [1, 5, 7, 20, frame.len() / 2, frame.len() - 1] {
            let mut out = Vec::new();
            assert!(
                decompress_into(3, &frame[..cut], &mut out).is_err(),
                "cut at {cut}"
            );
            assert!(out.is_empty(), "nothing is appended on error");
        }
        // A flipped byte in the header, in a block, in the content checksum.
        for at in [4, 6, 30, frame.len() / 2, frame.len() - 2] {
            let mut bad = frame.clone();
            bad[at] ^= 0x40;
            assert!(decompress(3, &bad).is_err(), "flip at {at}");
        }
        // A bad magic number.
        let mut bad = frame.clone();
        bad[0] ^= 1;
        assert!(decompress(3, &bad).unwrap_err().0.contains("magic"));
    }

    #[test]
    fn lz4_linked_blocks_still_decode() {
        use std::io::Write;
        let data = sample(300_000);
        let mut enc = lz4::EncoderBuilder::new()
            .block_mode(lz4::BlockMode::Linked)
            .build(Vec::new())
            .expect("encoder");
        enc.write_all(&data).expect("write");
        let (frame, res) = enc.finish();
        res.expect("finish");
        assert_eq!(decompress(3, &frame).expect("decodes"), data);
    }

    #[test]
    fn concatenated_and_skippable_lz4_frames() {
        let a = sample(1000);
        let b = sample(70_000);
        let mut src = lz4_frame_of(&a, true, lz4::BlockSize::Max64KB);
        src.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        src.extend_from_slice(&3u32.to_le_bytes());
        src.extend_from_slice(b"xyz");
        src.extend_from_slice(&lz4_frame_of(&b, false, lz4::BlockSize::Max64KB));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(decompress(3, &src).expect("decodes"), want);
    }

    #[test]
    fn zstd_round_trips_with_and_without_content_size_and_reuses_its_context() {
        let data = sample(500_000);
        let sized = zstd::bulk::compress(&data, 3).expect("compress");
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&sized),
            Ok(Some(_))
        ));
        let mut streamed = Vec::new();
        zstd::stream::copy_encode(&data[..], &mut streamed, 3).expect("compress");
        for src in [&sized, &streamed] {
            for _ in 0..3 {
                let mut out = b"p".to_vec();
                decompress_into(4, src, &mut out).expect("decodes");
                assert_eq!(&out[1..], &data[..]);
                let seen = with_decompressed(4, src, |d| d.len()).expect("decodes");
                assert_eq!(seen, data.len());
            }
        }
        // Two frames back to back decode as their concatenation.
        let mut two = sized.clone();
        two.extend_from_slice(&streamed);
        let mut want = data.clone();
        want.extend_from_slice(&data);
        assert_eq!(decompress(4, &two).expect("decodes"), want);
    }

    #[test]
    fn zstd_damage_is_an_error_and_the_context_recovers() {
        let data = sample(100_000);
        let src = zstd::bulk::compress(&data, 3).expect("compress");
        assert!(decompress(4, &src[..src.len() / 2]).is_err());
        assert!(decompress(4, &src[..src.len() - 1]).is_err());
        let mut bad = src.clone();
        bad[0] ^= 0xFF;
        assert!(decompress(4, &bad).is_err());
        assert_eq!(decompress(4, &src).expect("decodes after errors"), data);
    }

    #[test]
    fn gzip_and_snappy_and_unknown_codecs() {
        use kafka_protocol::compression::Compressor;
        let data = sample(10_000);
        for (codec, which) in [(1u8, "gzip"), (2, "snappy")] {
            let mut out = bytes::BytesMut::new();
            let fill = |b: &mut bytes::BytesMut| {
                b.extend_from_slice(&data);
                Ok(())
            };
            match which {
                "gzip" => Gzip::compress(&mut out, fill),
                _ => Snappy::compress(&mut out, fill),
            }
            .expect("compress");
            assert_eq!(decompress(codec, &out).expect(which), data);
        }
        assert!(decompress(5, b"abc").unwrap_err().0.contains("codec 5"));
        assert!(decompress(3, b"").is_err());
        assert!(decompress(4, b"").is_err());
    }

    #[test]
    fn compressed_by_us_reads_back_with_our_decoder_and_the_reference_ones() {
        use std::io::Read;
        for n in [0, 1, 1000, 65_536, 200_000] {
            let data = sample(n);
            for codec in 1u8..=4 {
                let mut out = b"hdr".to_vec();
                compress_into(codec, &data, &mut out).expect("compresses");
                assert_eq!(&out[..3], b"hdr");
                let c = &out[3..];
                assert_eq!(
                    decompress(codec, c).expect("ours decodes"),
                    data,
                    "codec {codec} n {n}"
                );
                let mut src = Bytes::copy_from_slice(c);
                let take = |b: &mut Bytes| Ok(std::mem::take(b));
                let theirs = match codec {
                    1 => Gzip::decompress(&mut src, take),
                    2 => Snappy::decompress(&mut src, take),
                    3 => Lz4::decompress(&mut src, take),
                    _ => Zstd::decompress(&mut src, take),
                }
                .expect("kafka-protocol decodes");
                assert_eq!(theirs, data, "codec {codec} n {n}");
            }
            // liblz4's own frame decoder, and zstd's, and the size zstd's header declares.
            let mut lz = Vec::new();
            compress_into(3, &data, &mut lz).expect("compresses");
            let mut back = Vec::new();
            lz4::Decoder::new(&lz[..])
                .expect("decoder")
                .read_to_end(&mut back)
                .expect("reads");
            assert_eq!(back, data);
            let mut zs = Vec::new();
            compress_into(4, &data, &mut zs).expect("compresses");
            assert_eq!(
                zstd::stream::decode_all(&zs[..]).expect("zstd decodes"),
                data
            );
            assert!(matches!(
                zstd::zstd_safe::get_frame_content_size(&zs),
                Ok(Some(m)) if m == n as u64
            ));
        }
    }

    #[test]
    fn lz4_stores_a_block_that_does_not_compress() {
        // Random bytes do not compress: the block goes out stored (high bit of its size).
        let mut x: u64 = 99;
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        compress_into(3, &data, &mut out).expect("compresses");
        assert_eq!(u32_at(&out, 7), Some(5000 | 0x8000_0000));
        assert_eq!(decompress(3, &out).expect("decodes"), data);
    }

    #[test]
    fn levels_change_the_output_and_still_read_back() {
        // Words picked at random: text with repeats near and far, as logs are.
        let words: Vec<&[u8]> = [
            "alpha ", "broker ", "commit ", "delta ", "epoch ", "fetch ", "group ", "header ",
            "index ", "join ", "kafka ", "leader ", "member ", "node ", "offset ", "produce ",
        ]
        .iter()
        .map(|w| w.as_bytes())
        .collect();
        let mut data = Vec::new();
        for (i, r) in sample(60_000).into_iter().enumerate() {
            data.extend_from_slice(words[(r as usize + i / 7) % words.len()]);
        }
        for (codec, low, high) in [(1u8, 1, 9), (3, 1, 12), (4, 1, 19)] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            compress_at_level(codec, Some(low), &data, &mut a).expect("low");
            compress_at_level(codec, Some(high), &data, &mut b).expect("high");
            assert!(
                b.len() < a.len(),
                "codec {codec}: {} !< {}",
                b.len(),
                a.len()
            );
            assert_eq!(decompress(codec, &a).expect("low reads"), data);
            assert_eq!(decompress(codec, &b).expect("high reads"), data);
        }
        // LZ4's default level is its fast mode, as compress_into writes.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        compress_at_level(3, Some(9), &data, &mut a).expect("9");
        compress_into(3, &data, &mut b).expect("default");
        assert_eq!(a, b);
        for (codec, bad) in [(1u8, 0), (1, 10), (3, 0), (3, 18), (4, 23), (4, -131_073)] {
            let mut out = b"x".to_vec();
            let err = compress_at_level(codec, Some(bad), &data, &mut out).unwrap_err();
            assert!(err.0.contains("out of range"), "{err}");
            assert_eq!(out, b"x");
        }
        assert!(level_ok(1, -1) && level_ok(4, -5) && !level_ok(2, 1));
    }
}
