//! A minimal keep-alive HTTP/1.1 client connection for the load generators: requests written
//! as prepared bytes, answers read with a content length or chunked (without trailers).

use std::net::SocketAddr;
use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One client connection and the bytes of the answer last read.
#[derive(Debug)]
pub struct HttpConn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<HttpConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    /// Sends one request and reads its answer: the status and where the body is in `self.buf`.
    pub async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Range<usize>)> {
        self.stream.write_all(request).await?;
        self.read_answer().await
    }

    /// Reads one answer: the status and where the body is in `self.buf`.
    pub async fn read_answer(&mut self) -> std::io::Result<(u16, Range<usize>)> {
        self.buf.clear();
        loop {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(answer) = complete_answer(&self.buf)? {
                return Ok(answer);
            }
        }
    }
}

/// The status and the body's place of the one answer in `buf`, once all of it is there (for a
/// chunked answer, the body as sent, chunk sizes included); `None` while more is to come.
pub fn complete_answer(buf: &[u8]) -> std::io::Result<Option<(u16, Range<usize>)>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4) else {
        return Ok(None);
    };
    let head = &buf[..head_end];
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let status = std::str::from_utf8(head.get(9..12).ok_or_else(|| bad("short status line"))?)
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let header = |wanted: &str| {
        head.split(|&b| b == b'\n').find_map(|line| {
            let line = std::str::from_utf8(line).ok()?.trim_end();
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(wanted).then(|| value.trim().to_owned())
        })
    };
    if let Some(length) = header("content-length") {
        let length: usize = length.parse().map_err(|_| bad("bad content-length"))?;
        return match buf.len().cmp(&(head_end + length)) {
            std::cmp::Ordering::Less => Ok(None),
            std::cmp::Ordering::Equal => Ok(Some((status, head_end..head_end + length))),
            std::cmp::Ordering::Greater => Err(bad("more bytes than one answer")),
        };
    }
    if !header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        return Err(bad("an answer without content-length or chunked encoding"));
    }
    // Chunked, without trailers: the answer ends with the empty last chunk.
    Ok(buf[head_end..]
        .ends_with(b"0\r\n\r\n")
        .then_some((status, head_end..buf.len())))
}
