//! Frames off an async byte stream (a QUIC receive stream), with the decoder's bounds.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::frame::{decode, Frame, FrameError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
}

pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
}

impl<R> std::fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameReader({} buffered)", self.buf.len())
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Payloads longer than `max` bytes are refused (before they are read).
    pub fn new(inner: R, max: usize) -> Self {
        Self { inner, buf: BytesMut::with_capacity(8 * 1024), max }
    }

    /// The next frame; `None` when the stream ends cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = decode(&mut self.buf, self.max)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(8 * 1024);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(FrameError::Truncated.into()) };
            }
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The reader and the bytes read from it but not yet returned as frames.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}
