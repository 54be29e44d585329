//! A connection's outgoing side: answers are queued as the buffers they were encoded into
//! and leave with vectored writes (`writev`), without being copied into a write buffer
//! first; large file regions leave with `sendfile`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use super::Chunk;

/// File regions smaller than this are read into memory and go out in the same write as
/// the bytes around them: one `writev` beats a write plus a `sendfile` for small data.
pub const SENDFILE_MIN_BYTES: usize = 16 * 1024;

/// Queued bytes beyond which [`Outbox::push`] callers should flush (the old write
/// buffer's size): bounds what a connection holds for a slow reader.
pub const FLUSH_AT_BYTES: usize = 64 * 1024;

/// Buffers given to one `writev` (Linux allows 1,024).
const MAX_IOVECS: usize = 64;

/// Answers waiting to be written, in order.
pub struct Outbox {
    stream: OwnedWriteHalf,
    queued: VecDeque<Bytes>,
    queued_bytes: usize,
}

impl Outbox {
    pub fn new(stream: OwnedWriteHalf) -> Self {
        Self {
            stream,
            queued: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    /// Whether nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.queued_bytes == 0
    }

    /// Queues a response's chunks. File regions below [`SENDFILE_MIN_BYTES`] are read into
    /// memory and queued; a larger one flushes what is queued and goes out with
    /// `sendfile`. Flushes once more than
    /// [`FLUSH_AT_BYTES`] are queued; otherwise the bytes wait for [`Outbox::flush`], so
    /// pipelined answers share a write.
    pub async fn write_chunks(&mut self, chunks: Vec<Chunk>) -> io::Result<()> {
        for chunk in chunks {
            match chunk {
                Chunk::Bytes(b) => self.push(b),
                Chunk::File(s) if s.len < SENDFILE_MIN_BYTES => self.push(s.read()?),
                Chunk::File(s) => {
                    self.flush().await?;
                    let stream: &TcpStream = self.stream.as_ref();
                    send_file(stream, &s.file, s.position, s.len).await?;
                }
            }
        }
        if self.queued_bytes > FLUSH_AT_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.queued_bytes += b.len();
            self.queued.push_back(b);
        }
    }

    /// Writes everything queued, [`MAX_IOVECS`] buffers per `writev`, resuming after
    /// partial writes.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.queued.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = self.queued.len().min(MAX_IOVECS);
            for (slot, b) in slices.iter_mut().zip(self.queued.iter()) {
                *slot = IoSlice::new(b);
            }
            let mut written = self.stream.write_vectored(&slices[..n]).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.queued_bytes -= written;
            while written > 0 {
                let front = self.queued.front_mut().expect("written bytes were queued");
                if written >= front.len() {
                    written -= front.len();
                    self.queued.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        Ok(())
    }
}

/// Sends `len` bytes of `file` from `position` with `sendfile` (zero-copy).
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    position: u64,
    len: usize,
) -> io::Result<()> {
    let mut offset = position as i64;
    let end = offset + len as i64;
    while offset < end {
        stream.writable().await?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let count = (end - offset) as usize;
            nix::sys::sendfile::sendfile(stream, file, Some(&mut offset), count)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                // The response promised more bytes than the file holds; the only safe
                // thing left is to drop the connection.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file ended before the fetch response did",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::log::ReadSlice;

    /// A connected pair: the outbox's side and the peer that reads it.
    async fn pair() -> (Outbox, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (_, w) = client.unwrap().into_split();
        (Outbox::new(w), accepted.unwrap().0)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn slice_of(data: &[u8], pad: usize) -> (ReadSlice, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![0xEE; pad]).unwrap();
        f.write_all(data).unwrap();
        f.flush().unwrap();
        let file = Arc::new(f.reopen().unwrap());
        (
            ReadSlice {
                file,
                position: pad as u64,
                len: data.len(),
            },
            f,
        )
    }

    #[tokio::test]
    async fn many_buffers_and_partial_writes_arrive_whole_and_in_order() {
        let (mut out, mut peer) = pair().await;
        // More than MAX_IOVECS buffers and more bytes than the socket takes at once, so
        // writev returns short counts and stops inside a buffer.
        let pieces: Vec<Vec<u8>> = (0..300).map(|i| pattern(1 + i * 97, i as u8)).collect();
        let expected: Vec<u8> = pieces.concat();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            // Read slowly at first so the sender's socket buffer fills.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            peer.read_exact(&mut got).await.unwrap();
            assert!(got == expected, "bytes differ from what was queued");
        });
        for p in pieces {
            out.write_chunks(vec![Chunk::Bytes(Bytes::from(p))])
                .await
                .unwrap();
        }
        out.flush().await.unwrap();
        assert!(out.is_empty());
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn file_regions_small_and_large_keep_their_place_between_bytes() {
        let (mut out, mut peer) = pair().await;
        let head = pattern(100, 1);
        let small = pattern(SENDFILE_MIN_BYTES - 1, 2);
        let large = pattern(3 * FLUSH_AT_BYTES, 3);
        let tail = pattern(50, 4);
        let (small_slice, _f1) = slice_of(&small, 17);
        let (large_slice, _f2) = slice_of(&large, 4096);
        let expected = [head.clone(), small.clone(), large.clone(), tail.clone()].concat();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            peer.read_exact(&mut got).await.unwrap();
            assert!(got == expected, "response bytes out of order or wrong");
        });
        out.write_chunks(vec![
            Chunk::Bytes(Bytes::from(head)),
            Chunk::File(small_slice),
            Chunk::File(large_slice),
            Chunk::Bytes(Bytes::from(tail)),
        ])
        .await
        .unwrap();
        out.flush().await.unwrap();
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_is_an_error() {
        let (mut out, mut peer) = pair().await;
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            peer.read_to_end(&mut sink).await.map(|_| sink.len())
        });
        let data = pattern(2 * FLUSH_AT_BYTES, 5);
        let (mut s, _f) = slice_of(&data, 0);
        s.len += 10;
        let err = out.write_chunks(vec![Chunk::File(s)]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        drop(out);
        // What the file did hold went out before the error.
        assert_eq!(drain.await.unwrap().unwrap(), data.len());
    }
}
