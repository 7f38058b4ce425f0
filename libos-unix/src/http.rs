//! The HTTP/1.1 server's logic: request parsing, routing, the response cache and response bytes.
//!
//! The network program (`net.rs`) feeds the bytes a TCP connection
//! delivered to [`parse_request`] until it reports a complete request (or
//! a bad one), asks [`Server::answer`] for the [`Reply`], sends its bytes,
//! and then either reads the connection's next request (keep-alive) or
//! closes it. No system calls here: host-tested.
//!
//! The fast path, after Cheetah (Xok's web server): a static file's
//! complete response (status line, headers and body, for each HTTP
//! version and connection disposition a client asks for) is built once,
//! on its first request, and kept; every later request for it is answered
//! with a reference to those bytes ([`Reply::bytes`] is shared, never
//! copied here). Cache hits and misses are counted.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest request head accepted; a longer one is answered 431.
pub const MAX_REQUEST_BYTES: usize = 2048;
/// Most bytes of files the server keeps (the rest are not served).
pub const MAX_FILE_BYTES: usize = 512 * 1024;

/// A parsed request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target, query string included.
    pub path: &'a str,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'a str,
    /// Bytes of the head, through the blank line that ends it.
    pub head_len: usize,
    /// The client wants the connection kept open after the response:
    /// HTTP/1.1 unless it says `Connection: close`, HTTP/1.0 only if it
    /// says `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// Why a request cannot be answered normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not `METHOD SP TARGET SP HTTP/1.x`, a header line without a colon,
    /// a bad `Content-Length`, or not text. 400.
    Malformed,
    /// The head is longer than [`MAX_REQUEST_BYTES`]. 431.
    TooLarge,
    /// The request has a body (`Content-Length` > 0 or
    /// `Transfer-Encoding`): this server takes none. 413.
    BodyRefused,
}

/// Parse the head of an HTTP request from the bytes received so far:
/// `Ok(None)` while the blank line that ends the head has not arrived.
///
/// One pass over the bytes, line by line: the request line is checked as
/// soon as it is complete, each header line as it comes (printable ASCII
/// or tab, a colon after the name); only `Connection`, `Content-Length`
/// and `Transfer-Encoding` are looked at.
pub fn parse_request(bytes: &[u8]) -> Result<Option<Request<'_>>, ParseError> {
    let mut line_start = 0;
    let mut request_line: Option<(&str, &str, &str)> = None;
    let mut keep_alive = false;
    let mut head_len = None;
    while let Some(newline) = bytes[line_start..].iter().position(|&b| b == b'\n') {
        let line_end = line_start + newline;
        if line_end + 1 > MAX_REQUEST_BYTES {
            return Err(ParseError::TooLarge);
        }
        let line = &bytes[line_start..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line_start = line_end + 1;
        let Some(_) = request_line else {
            let parsed = parse_request_line(line)?;
            keep_alive = parsed.2 == "HTTP/1.1";
            request_line = Some(parsed);
            continue;
        };
        if line.is_empty() {
            head_len = Some(line_start);
            break;
        }
        header(line, &mut keep_alive)?;
    }
    let (Some(head_len), Some((method, path, version))) = (head_len, request_line) else {
        if bytes.len() >= MAX_REQUEST_BYTES {
            return Err(ParseError::TooLarge);
        }
        return Ok(None);
    };
    Ok(Some(Request { method, path, version, head_len, keep_alive }))
}

/// Check one header line and note what it says about the connection.
fn header(line: &[u8], keep_alive: &mut bool) -> Result<(), ParseError> {
    if !line.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return Err(ParseError::Malformed);
    }
    let colon = line.iter().position(|&b| b == b':').ok_or(ParseError::Malformed)?;
    let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
    if name.eq_ignore_ascii_case(b"connection") {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                *keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                *keep_alive = true;
            }
        }
    } else if name.eq_ignore_ascii_case(b"content-length") {
        let text = core::str::from_utf8(value).map_err(|_| ParseError::Malformed)?;
        let length: u64 = text.parse().map_err(|_| ParseError::Malformed)?;
        if length > 0 {
            return Err(ParseError::BodyRefused);
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        return Err(ParseError::BodyRefused);
    }
    Ok(())
}

fn parse_request_line(line: &[u8]) -> Result<(&str, &str, &str), ParseError> {
    let line = core::str::from_utf8(line).map_err(|_| ParseError::Malformed)?;
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

/// A response: a status, a content type and a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: String) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into_bytes() }
    }

    /// The reason phrase of the status.
    pub fn reason(&self) -> &'static str {
        reason(self.status)
    }

    /// The head on the wire: the status line in `version` (the request's),
    /// headers, and `Connection: keep-alive` or `close`.
    pub fn head(&self, version: &str, keep_alive: bool) -> Vec<u8> {
        let allow = if self.status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
        let connection = if keep_alive { "keep-alive" } else { "close" };
        format!(
            "{} {} {}\r\nServer: libos-unix\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: {}\r\n\r\n",
            version,
            self.status,
            self.reason(),
            self.content_type,
            self.body.len(),
            allow,
            connection,
        )
        .into_bytes()
    }

    /// The whole response on the wire: head and body.
    pub fn to_bytes(&self, version: &str, keep_alive: bool) -> Vec<u8> {
        let mut out = self.head(version, keep_alive);
        out.extend_from_slice(&self.body);
        out
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
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    }
}

/// What to send for one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// The response bytes: shared with the cache for a cached file.
    pub bytes: Rc<[u8]>,
    /// How many of `bytes` to send (the head alone for `HEAD`).
    pub len: usize,
    /// Close the connection once it is sent.
    pub close: bool,
    /// Answered from the response cache.
    pub cached: bool,
}

impl Reply {
    fn new(response: &Response, version: &str, keep_alive: bool, head_only: bool) -> Reply {
        let bytes: Rc<[u8]> = Rc::from(response.to_bytes(version, keep_alive));
        let len = if head_only { bytes.len() - response.body.len() } else { bytes.len() };
        Reply { status: response.status, bytes, len, close: !keep_alive, cached: false }
    }

    pub fn reason(&self) -> &'static str {
        reason(self.status)
    }

    /// The bytes to send.
    pub fn wire(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A cached file: its body and, built on first use, its complete response
/// for each (HTTP version, keep-alive) pair.
struct CachedFile {
    body_len: usize,
    responses: [Option<Rc<[u8]>>; 4],
}

fn variant(version: &str, keep_alive: bool) -> usize {
    (version == "HTTP/1.1") as usize * 2 + keep_alive as usize
}

/// The server's state: its files, the response cache and its counters.
#[derive(Default)]
pub struct Server {
    /// Requests answered so far (every status counts).
    pub requests: u64,
    /// Requests answered from a response built earlier, and those that
    /// had to build it.
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Files served, by request path (`/index.html`): body and content type.
    files: BTreeMap<String, (Vec<u8>, &'static str)>,
    file_bytes: usize,
    cache: BTreeMap<String, CachedFile>,
}

impl Server {
    pub fn new() -> Server {
        Server::default()
    }

    /// Serve `body` at `path` (which starts with `/`). False if the file
    /// budget ([`MAX_FILE_BYTES`]) has no room for it.
    pub fn add_file(&mut self, path: &str, body: Vec<u8>) -> bool {
        if !path.starts_with('/') || self.file_bytes + body.len() > MAX_FILE_BYTES {
            return false;
        }
        self.file_bytes += body.len();
        self.files.insert(String::from(path), (body, content_type(path)));
        true
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Answer a client that stopped sending before its request head
    /// ended (counting it): 408, and the connection is closed.
    pub fn timed_out(&mut self) -> Reply {
        self.requests += 1;
        Reply::new(&Response::text(408, String::from("request head not received in time\n")), "HTTP/1.1", false, false)
    }

    /// Answer one parse result (counting it). Files from the cache, `GET /`
    /// the dynamic page, other paths 404, other methods 405, bad requests
    /// 400/413/431 (and the connection closes).
    pub fn answer(&mut self, parsed: Result<Request<'_>, ParseError>) -> Reply {
        self.requests += 1;
        let request = match parsed {
            Ok(request) => request,
            Err(error) => {
                let (status, text) = match error {
                    ParseError::Malformed => (400, "bad request\n"),
                    ParseError::TooLarge => (431, "request head too large\n"),
                    ParseError::BodyRefused => (413, "request bodies are not accepted here\n"),
                };
                return Reply::new(&Response::text(status, String::from(text)), "HTTP/1.1", false, false);
            }
        };
        let (version, keep_alive) = (request.version, request.keep_alive);
        if request.method != "GET" && request.method != "HEAD" {
            let response = Response::text(405, String::from("only GET and HEAD are served here\n"));
            return Reply::new(&response, version, keep_alive, false);
        }
        let head_only = request.method == "HEAD";
        let path = request.path.split('?').next().unwrap_or("");
        if let Some(reply) = self.cached(path, version, keep_alive, head_only) {
            return reply;
        }
        let response = match path {
            "/" | "/index.txt" => Response::text(200, page(self.requests)),
            _ => Response::text(404, format!("no such page: {}\n", path)),
        };
        Reply::new(&response, version, keep_alive, head_only)
    }

    /// The fast path: the kept response for file `path`, built now if this
    /// is its first request in this form.
    fn cached(&mut self, path: &str, version: &str, keep_alive: bool, head_only: bool) -> Option<Reply> {
        if !self.cache.contains_key(path) {
            let (body, _) = self.files.get(path)?;
            self.cache.insert(String::from(path), CachedFile { body_len: body.len(), responses: Default::default() });
        }
        let entry = self.cache.get_mut(path)?;
        let slot = &mut entry.responses[variant(version, keep_alive)];
        let bytes = match slot {
            Some(bytes) => {
                self.cache_hits += 1;
                bytes.clone()
            }
            None => {
                self.cache_misses += 1;
                let (body, content_type) = self.files.get(path)?;
                let response = Response { status: 200, content_type, body: body.clone() };
                let bytes: Rc<[u8]> = Rc::from(response.to_bytes(version, keep_alive));
                *slot = Some(bytes.clone());
                bytes
            }
        };
        let len = if head_only { bytes.len() - entry.body_len } else { bytes.len() };
        Some(Reply { status: 200, bytes, len, close: !keep_alive, cached: true })
    }
}

/// The content type of a file, from its name.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("png") => "image/png",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The text of the dynamic page: names the libOS and counts requests.
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
        assert!(request.keep_alive, "HTTP/1.1 keeps the connection by default");
        let bare = parse_request(b"GET / HTTP/1.0\n\n").unwrap().unwrap();
        assert_eq!((bare.path, bare.head_len, bare.keep_alive), ("/", 16, false));
    }

    #[test]
    fn connection_header_decides_keep_alive() {
        let close = parse_request(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap().unwrap();
        assert!(!close.keep_alive);
        let keep = parse_request(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert!(keep.keep_alive);
        // Pipelined: the head ends at the first blank line.
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let first = parse_request(two).unwrap().unwrap();
        assert_eq!((first.path, first.head_len), ("/a", 19));
        assert_eq!(parse_request(&two[first.head_len..]).unwrap().unwrap().path, "/b");
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
    fn refuses_malformed_oversized_and_bodies() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"get / HTTP/1.0\r\n\r\n",
            b"GET nopath HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.0 extra\r\n\r\n",
            b"GET /\xff HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Bytes: \xff\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad), Err(ParseError::Malformed), "{:?}", bad);
        }
        // A broken request line is refused before the head ends.
        assert_eq!(parse_request(b"BLAH\r\nHost: x\r\n"), Err(ParseError::Malformed));
        let mut long = b"GET / HTTP/1.0\r\n".to_vec();
        long.resize(MAX_REQUEST_BYTES, b'a');
        assert_eq!(parse_request(&long), Err(ParseError::TooLarge));
        let body = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_request(body), Err(ParseError::BodyRefused));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_request(chunked), Err(ParseError::BodyRefused));
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap().is_some());
    }

    fn text(reply: &Reply) -> String {
        String::from_utf8(reply.wire().to_vec()).unwrap()
    }

    #[test]
    fn routes_and_counts() {
        let mut server = Server::new();
        let ok = server.answer(parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().ok_or(ParseError::Malformed));
        assert_eq!(ok.status, 200);
        assert!(ok.close, "HTTP/1.0 without keep-alive closes");
        assert!(text(&ok).contains("libos-unix") && text(&ok).contains("request number 1."));
        let missing = server.answer(Ok(parse_request(b"GET /nope HTTP/1.1\r\n\r\n").unwrap().unwrap()));
        assert_eq!((missing.status, missing.close), (404, false));
        let post = server.answer(Ok(parse_request(b"POST / HTTP/1.0\r\n\r\n").unwrap().unwrap()));
        assert_eq!(post.status, 405);
        assert!(text(&post).contains("\r\nAllow: GET, HEAD\r\n"));
        for (error, status) in
            [(ParseError::Malformed, 400), (ParseError::TooLarge, 431), (ParseError::BodyRefused, 413)]
        {
            let reply = server.answer(Err(error));
            assert_eq!((reply.status, reply.close), (status, true));
            assert!(text(&reply).contains("\r\nConnection: close\r\n"));
        }
        let timeout = server.timed_out();
        assert_eq!((timeout.status, timeout.reason(), timeout.close), (408, "Request Timeout", true));
        let again = server.answer(Ok(parse_request(b"GET /?q HTTP/1.1\r\n\r\n").unwrap().unwrap()));
        assert!(text(&again).contains("request number 8."), "{}", text(&again));
        assert_eq!(server.requests, 8, "a timeout counts as a request answered");
        assert_eq!((server.cache_hits, server.cache_misses), (0, 0));
    }

    #[test]
    fn response_bytes() {
        let response = Response::text(404, String::from("gone\n"));
        let text = String::from_utf8(response.to_bytes("HTTP/1.0", false)).unwrap();
        assert!(text.starts_with("HTTP/1.0 404 Not Found\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 5\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\ngone\n"));
        let kept = String::from_utf8(response.to_bytes("HTTP/1.1", true)).unwrap();
        assert!(kept.starts_with("HTTP/1.1 404 ") && kept.contains("\r\nConnection: keep-alive\r\n"));
    }

    #[test]
    fn files_are_answered_from_responses_built_once() {
        let mut server = Server::new();
        let body = b"<p>hello</p>\n".repeat(100);
        assert!(server.add_file("/index.html", body.clone()));
        assert!(!server.add_file("/huge", alloc::vec![0; MAX_FILE_BYTES]), "over the file budget");
        let get = |server: &mut Server, raw: &[u8]| server.answer(Ok(parse_request(raw).unwrap().unwrap()));
        let first = get(&mut server, b"GET /index.html HTTP/1.1\r\n\r\n");
        assert_eq!((first.status, first.cached, first.close), (200, true, false));
        assert!(text(&first).contains("Content-Type: text/html"));
        assert!(first.wire().ends_with(&body));
        let second = get(&mut server, b"GET /index.html?v=2 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(Rc::ptr_eq(&first.bytes, &second.bytes), "the kept bytes, not a copy");
        assert_eq!((server.cache_misses, server.cache_hits), (1, 1));
        // Another form (HTTP/1.0, close) is built once too; HEAD shares it.
        let old = get(&mut server, b"GET /index.html HTTP/1.0\r\n\r\n");
        assert!(old.close && text(&old).starts_with("HTTP/1.0 200 OK\r\n"));
        let head = get(&mut server, b"HEAD /index.html HTTP/1.0\r\n\r\n");
        assert!(Rc::ptr_eq(&old.bytes, &head.bytes));
        assert_eq!(head.len, head.bytes.len() - body.len());
        assert!(text(&head).ends_with("\r\n\r\n"));
        assert_eq!((server.cache_misses, server.cache_hits), (2, 2));
        assert_eq!(server.requests, 4);
    }
}
