//! A small HTTP/1.1 client over a Unix socket for the API tests: one
//! request at a time on a kept connection, or raw bytes for the hostile
//! clients.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body (empty when none).
    pub body: String,
    /// The server said it closes the connection.
    pub close: bool,
}

/// A connection to the API.
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// The raw stream (for hostile clients).
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Sends `method uri` with `body` (JSON or none) and reads the answer.
    pub fn call(&mut self, method: &str, uri: &str, body: Option<&str>) -> std::io::Result<Answer> {
        self.send(method, uri, body)?;
        self.read_answer()
    }

    /// Sends a request without reading its answer.
    pub fn send(&mut self, method: &str, uri: &str, body: Option<&str>) -> std::io::Result<()> {
        self.stream.write_all(&request(method, uri, body))
    }

    /// Reads one answer.
    pub fn read_answer(&mut self) -> std::io::Result<Answer> {
        loop {
            if let Some((answer, used)) = parse_answer(&self.buf) {
                self.buf.drain(..used);
                return Ok(answer);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The bytes of a request.
pub fn request(method: &str, uri: &str, body: Option<&str>) -> Vec<u8> {
    let mut text =
        format!("{method} {uri} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if let Some(b) = body {
        text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        text.push_str("\r\n");
    }
    text.into_bytes()
}

/// The first answer in `buf` and its length, once whole.
pub fn parse_answer(buf: &[u8]) -> Option<(Answer, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0;
    let mut close = false;
    for line in head.lines().skip(1) {
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().ok()?;
        }
        if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    if buf.len() < end + length {
        return None;
    }
    let body = String::from_utf8_lossy(&buf[end..end + length]).to_string();
    Some((
        Answer {
            status,
            body,
            close,
        },
        end + length,
    ))
}
