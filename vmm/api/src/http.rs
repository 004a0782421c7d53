//! HTTP/1.1 as the API speaks it: a request's head parsed by `httparse`,
//! its body by its Content-Length (no chunked bodies, as Firecracker),
//! pipelined requests one after another, and the answers Firecracker gives:
//! 200 with JSON, 204 without a body, 400 with `{"fault_message": ...}`.

/// Firecracker's default for `--http-api-max-payload-size`: 51200 bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 51_200;

/// The longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8192;

/// The most headers a request may have.
pub const MAX_HEADERS: usize = 32;

/// The methods the API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// PUT
    Put,
    /// PATCH
    Patch,
}

/// A request, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its method, or the one it had that the API does not know.
    pub method: Result<Method, String>,
    /// Its path, without a query.
    pub path: String,
    /// Its body (empty when it had none).
    pub body: Vec<u8>,
    /// The client asked to close the connection after the answer.
    pub close: bool,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 200, 204 or 400 (500 for a failure of the VMM's own).
    pub status: u16,
    /// The JSON body, if any.
    pub body: Option<String>,
    /// Close the connection once it is sent.
    pub close: bool,
}

impl Response {
    /// 200 with `body`.
    pub fn ok(body: String) -> Response {
        Response {
            status: 200,
            body: Some(body),
            close: false,
        }
    }

    /// 204, no body.
    pub fn no_content() -> Response {
        Response {
            status: 204,
            body: None,
            close: false,
        }
    }

    /// 400 with `{"fault_message": message}`.
    pub fn fault(message: impl Into<String>) -> Response {
        Response::fault_status(400, message)
    }

    /// `status` with `{"fault_message": message}`.
    pub fn fault_status(status: u16, message: impl Into<String>) -> Response {
        let body = serde_json::json!({ "fault_message": message.into() }).to_string();
        Response {
            status,
            body: Some(body),
            close: false,
        }
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            413 => "Payload Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nServer: Firecracker API\r\nConnection: {}\r\n",
            self.status,
            if self.close { "close" } else { "keep-alive" }
        );
        match &self.body {
            Some(b) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => head.push_str("\r\n"),
        }
        head.into_bytes()
    }
}

/// What the bytes received so far on a connection hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet.
    Incomplete,
    /// A request, and how many bytes it took.
    Request(Request, usize),
    /// A request that cannot be served; the connection closes after the
    /// answer (what follows cannot be framed).
    Bad(Response),
}

fn bad(status: u16, message: impl Into<String>) -> Parsed {
    let mut r = Response::fault_status(status, message);
    r.close = true;
    Parsed::Bad(r)
}

/// Parses the first request in `buf`, whose body may be at most
/// `max_payload` bytes.
pub fn parse(buf: &[u8], max_payload: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return bad(
                    400,
                    format!("the request's head is longer than {MAX_HEAD} bytes"),
                );
            }
            return Parsed::Incomplete;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return bad(400, format!("more than {MAX_HEADERS} headers"));
        }
        Err(e) => return bad(400, format!("invalid HTTP request: {e}")),
    };
    if head_len > MAX_HEAD {
        return bad(
            400,
            format!("the request's head is longer than {MAX_HEAD} bytes"),
        );
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Ok(Method::Get),
        "PUT" => Ok(Method::Put),
        "PATCH" => Ok(Method::Patch),
        other => Err(other.to_string()),
    };
    let version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    let mut length: usize = 0;
    // HTTP/1.0 closes by default, 1.1 keeps the connection.
    let mut close = version == 0;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = match value.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return bad(400, format!("invalid Content-Length '{value}'")),
            };
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return bad(
                400,
                "Transfer-Encoding is not supported: send the body with a Content-Length",
            );
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                close = true;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("expect")
            && value.eq_ignore_ascii_case("100-continue")
        {
            return bad(400, "Expect: 100-continue is not supported");
        }
    }
    if length > max_payload {
        return bad(
            400,
            format!(
                "Request payload with size {length} is larger than the limit of {max_payload} \
                 allowed by server."
            ),
        );
    }
    let end = head_len + length;
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    Parsed::Request(
        Request {
            method,
            path,
            body: buf[head_len..end].to_vec(),
            close,
        },
        end,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> (Request, usize) {
        match parse(text.as_bytes(), DEFAULT_MAX_PAYLOAD) {
            Parsed::Request(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    fn refused(bytes: &[u8], max: usize) -> Response {
        match parse(bytes, max) {
            Parsed::Bad(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_with_a_body_and_pipelined_ones() {
        let two = "PUT /actions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n";
        let (r, n) = req(two);
        assert_eq!(r.method, Ok(Method::Put));
        assert_eq!(r.path, "/actions");
        assert_eq!(r.body, b"{}");
        assert!(!r.close);
        let (r, m) = req(&two[n..]);
        assert_eq!(r.method, Ok(Method::Get));
        assert_eq!(r.path, "/");
        assert_eq!(n + m, two.len());
    }

    #[test]
    fn halves_wait_for_the_rest() {
        for text in [
            "GET / HTT",
            "PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a\"",
            "",
        ] {
            assert_eq!(parse(text.as_bytes(), 100), Parsed::Incomplete, "{text}");
        }
    }

    #[test]
    fn what_cannot_be_framed_is_refused_and_closes() {
        let big = format!("PUT /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 100);
        let r = refused(big.as_bytes(), 99);
        assert_eq!(r.status, 400);
        assert!(r.close);
        assert!(r.body.unwrap().contains("larger than the limit of 99"));
        for (bytes, says) in [
            (&b"\xff\xfe / HTTP/1.1\r\n\r\n"[..], "invalid HTTP request"),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                "Content-Length",
            ),
            (
                b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
        ] {
            let r = refused(bytes, 100);
            assert_eq!(r.status, 400);
            assert!(r.body.unwrap().contains(says), "{says}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(refused(long.as_bytes(), 100).status, 400);
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(refused(many.as_bytes(), 100).status, 400);
    }

    #[test]
    fn methods_queries_and_connection_close() {
        let (r, _) = req("DELETE /drives/a?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(r.method, Err("DELETE".into()));
        assert_eq!(r.path, "/drives/a");
        assert!(r.close);
        let (r, _) = req("GET / HTTP/1.0\r\n\r\n");
        assert!(r.close);
    }

    #[test]
    fn answers_as_firecracker_gives_them() {
        let b = Response::no_content().to_bytes();
        let t = String::from_utf8(b).unwrap();
        assert!(t.starts_with("HTTP/1.1 204 No Content\r\n"), "{t}");
        assert!(!t.contains("Content-Length"), "{t}");
        let t = String::from_utf8(Response::fault("bad \"x\"").to_bytes()).unwrap();
        let body = t.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["fault_message"], "bad \"x\"");
        assert!(t.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
