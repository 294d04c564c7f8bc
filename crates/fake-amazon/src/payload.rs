//! Large bodies generated on the fly (`POST /__fake/payloads`), for streaming tests.
//!
//! Byte `i` of every payload is [`byte_at`]`(i)` = `i % 251`: a period that is prime and does not
//! divide the chunk size, so a lost, repeated or reordered chunk shows in any checksum. The body
//! is produced chunk by chunk as the client reads it; the whole payload is never in memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};

use crate::http::set_header;
use crate::model::PayloadSpec;

/// The operation id of a payload download (rates, buckets).
pub const OPERATION: &str = "downloadPayload";
/// Bytes per chunk of a streamed payload.
pub const CHUNK: usize = 64 * 1024;
/// The period of the payload pattern.
const PERIOD: u64 = 251;
/// `Content-Type` of a payload registered without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Byte `offset` of every payload: `offset % 251`.
pub fn byte_at(offset: u64) -> u8 {
    // Always < 251.
    (offset % PERIOD) as u8
}

/// A body of `remaining` pattern bytes, starting at pattern offset `offset`.
#[derive(Debug)]
struct PatternBody {
    /// One chunk plus one period of the pattern, sliced (without copying) for each chunk.
    pattern: Bytes,
    offset: u64,
    remaining: u64,
}

impl hyper::body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        // < 251, so a valid index.
        let start = (self.offset % PERIOD) as usize;
        let chunk = self.pattern.slice(start..start + len);
        self.offset += len as u64;
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The 200 answer streaming `spec.bytes` pattern bytes, with `Content-Length`.
pub(crate) fn response(spec: &PayloadSpec) -> Response {
    let pattern: Vec<u8> = (0..(CHUNK as u64 + PERIOD)).map(byte_at).collect();
    let body = PatternBody {
        pattern: Bytes::from(pattern),
        offset: 0,
        remaining: spec.bytes,
    };
    let mut resp = Response::new(Body::new(body));
    *resp.status_mut() = StatusCode::OK;
    set_header(
        &mut resp,
        "content-type",
        spec.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE),
    );
    set_header(&mut resp, "content-length", &spec.bytes.to_string());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    #[tokio::test]
    async fn streams_the_exact_pattern_in_chunks() {
        for len in [
            0u64,
            1,
            250,
            251,
            CHUNK as u64,
            CHUNK as u64 + 1,
            3 * CHUNK as u64 + 77,
        ] {
            let resp = response(&PayloadSpec {
                host: "h".into(),
                path: "/p".into(),
                bytes: len,
                content_type: None,
            });
            assert_eq!(resp.headers()["content-length"], len.to_string().as_str());
            let mut stream = resp.into_body().into_data_stream();
            let mut offset = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                assert!(chunk.len() <= CHUNK);
                for b in chunk.iter() {
                    assert_eq!(*b, byte_at(offset));
                    offset += 1;
                }
            }
            assert_eq!(offset, len);
        }
    }
}
