//! The tiny HTTP/1.0 server's logic: request parsing, routing and response bytes.
//!
//! The network program (`net.rs`) feeds the bytes a TCP connection
//! delivered to [`parse_request`] until it reports a complete request (or
//! a malformed one), asks [`Server::answer`] what to reply, and sends
//! [`Response::to_bytes`] before closing the connection (HTTP/1.0: one
//! request per connection). No system calls here: host-tested.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest request head accepted; a longer one is answered 431.
pub const MAX_REQUEST_BYTES: usize = 2048;

/// A parsed request line (headers are read past and ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target, query string included.
    pub path: &'a str,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'a str,
    /// Bytes of the head, through the blank line that ends it.
    pub head_len: usize,
}

/// Why a request cannot be answered normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not `METHOD SP TARGET SP HTTP/1.x`, or not text.
    Malformed,
    /// The head is longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
}

/// Parse the head of an HTTP request from the bytes received so far:
/// `Ok(None)` while the blank line that ends the head has not arrived.
pub fn parse_request(bytes: &[u8]) -> Result<Option<Request<'_>>, ParseError> {
    let Some(end) = find_head_end(bytes) else {
        if bytes.len() >= MAX_REQUEST_BYTES {
            return Err(ParseError::TooLarge);
        }
        // A request line that is already wrong need not wait for the rest.
        if let Some(line_end) = bytes.iter().position(|&b| b == b'\n') {
            parse_request_line(&bytes[..line_end])?;
        }
        return Ok(None);
    };
    if end > MAX_REQUEST_BYTES {
        return Err(ParseError::TooLarge);
    }
    let line_end = bytes.iter().position(|&b| b == b'\n').unwrap_or(end);
    let (method, path, version) = parse_request_line(&bytes[..line_end])?;
    Ok(Some(Request { method, path, version, head_len: end }))
}

/// The offset just past the first blank line (`\r\n\r\n` or `\n\n`).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_request_line(line: &[u8]) -> Result<(&str, &str, &str), ParseError> {
    let line = core::str::from_utf8(line).map_err(|_| ParseError::Malformed)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut words = line.split(' ');
    let (Some(method), Some(path), Some(version), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(ParseError::Malformed);
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    let path_ok = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic());
    let version_ok = matches!(version, "HTTP/1.0" | "HTTP/1.1");
    if method_ok && path_ok && version_ok {
        Ok((method, path, version))
    } else {
        Err(ParseError::Malformed)
    }
}

/// A response: a status and a plain-text body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: String) -> Response {
        Response { status, body }
    }

    /// The reason phrase of the status.
    pub fn reason(&self) -> &'static str {
        reason(self.status)
    }

    /// The bytes on the wire: an HTTP/1.0 status line, headers, the body.
    /// The connection closes after it, as HTTP/1.0 says.
    pub fn to_bytes(&self) -> Vec<u8> {
        let allow = if self.status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
        let mut out = format!(
            "HTTP/1.0 {} {}\r\nServer: libos-unix\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.reason(),
            self.body.len(),
            allow,
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }

    /// The same response without its body (the answer to `HEAD`; the
    /// headers still give the body's length).
    pub fn head_bytes(&self) -> Vec<u8> {
        let full = self.to_bytes();
        full[..full.len() - self.body.len()].to_vec()
    }
}

/// The reason phrase of the statuses the server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    }
}

/// The server's state: how many requests it has answered.
#[derive(Clone, Debug, Default)]
pub struct Server {
    /// Requests answered so far (every status counts).
    pub requests: u64,
}

impl Server {
    pub fn new() -> Server {
        Server::default()
    }

    /// Answer a client that stopped sending before its request head
    /// ended (counting it): 408, and the connection is closed.
    pub fn timed_out(&mut self) -> Response {
        self.requests += 1;
        Response::text(408, String::from("request head not received in time\n"))
    }

    /// Answer one parse result (counting it). `GET /` (and `/index.txt`)
    /// get the page, other paths 404, other methods 405, bad requests 400.
    pub fn answer(&mut self, parsed: Result<Request<'_>, ParseError>) -> Response {
        self.requests += 1;
        let request = match parsed {
            Ok(request) => request,
            Err(ParseError::Malformed) => return Response::text(400, String::from("bad request\n")),
            Err(ParseError::TooLarge) => return Response::text(431, String::from("request head too large\n")),
        };
        if request.method != "GET" && request.method != "HEAD" {
            return Response::text(405, String::from("only GET and HEAD are served here\n"));
        }
        let path = request.path.split('?').next().unwrap_or("");
        match path {
            "/" | "/index.txt" => Response::text(200, page(self.requests)),
            _ => Response::text(404, format!("no such page: {}\n", path)),
        }
    }
}

/// The text of the one page: names the libOS and counts requests.
pub fn page(request_number: u64) -> String {
    format!(
        "Hello from libos-unix, a library OS on an exokernel.\n\
         TCP/IP by smoltcp, on packets claimed by downloaded filters.\n\
         You are request number {}.\n",
        request_number
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_request() {
        let bytes = b"GET /index.txt?x=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\n\r\n";
        let request = parse_request(bytes).unwrap().unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/index.txt?x=1");
        assert_eq!(request.version, "HTTP/1.1");
        assert_eq!(request.head_len, bytes.len());
        let bare = parse_request(b"GET / HTTP/1.0\n\n").unwrap().unwrap();
        assert_eq!((bare.path, bare.head_len), ("/", 16));
    }

    #[test]
    fn waits_for_the_end_of_the_head() {
        let whole = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_request(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_request(whole).unwrap().is_some());
    }

    #[test]
    fn refuses_malformed_and_oversized_heads() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"get / HTTP/1.0\r\n\r\n",
            b"GET nopath HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.0 extra\r\n\r\n",
            b"GET /\xff HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad), Err(ParseError::Malformed), "{:?}", bad);
        }
        // A broken request line is refused before the head ends.
        assert_eq!(parse_request(b"BLAH\r\nHost: x\r\n"), Err(ParseError::Malformed));
        let mut long = b"GET / HTTP/1.0\r\n".to_vec();
        long.resize(MAX_REQUEST_BYTES, b'a');
        assert_eq!(parse_request(&long), Err(ParseError::TooLarge));
    }

    #[test]
    fn routes_and_counts() {
        let mut server = Server::new();
        let ok = server.answer(parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().ok_or(ParseError::Malformed));
        assert_eq!(ok.status, 200);
        assert!(ok.body.contains("libos-unix") && ok.body.contains("request number 1."));
        let missing = server.answer(Ok(parse_request(b"GET /nope HTTP/1.0\r\n\r\n").unwrap().unwrap()));
        assert_eq!(missing.status, 404);
        let post = server.answer(Ok(parse_request(b"POST / HTTP/1.0\r\n\r\n").unwrap().unwrap()));
        assert_eq!(post.status, 405);
        assert_eq!(server.answer(Err(ParseError::Malformed)).status, 400);
        assert_eq!(server.answer(Err(ParseError::TooLarge)).status, 431);
        let timeout = server.timed_out();
        assert_eq!((timeout.status, timeout.reason()), (408, "Request Timeout"));
        let again = server.answer(Ok(parse_request(b"GET /?q HTTP/1.1\r\n\r\n").unwrap().unwrap()));
        assert!(again.body.contains("request number 7."), "{}", again.body);
        assert_eq!(server.requests, 7, "a timeout counts as a request answered");
    }

    #[test]
    fn response_bytes() {
        let response = Response { status: 404, body: String::from("gone\n") };
        let text = String::from_utf8(response.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.0 404 Not Found\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 5\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\ngone\n"));
        let head = String::from_utf8(response.head_bytes()).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 5"));
        let refused = Response { status: 405, body: String::new() }.to_bytes();
        assert!(String::from_utf8(refused).unwrap().contains("\r\nAllow: GET, HEAD\r\n"));
    }
}
