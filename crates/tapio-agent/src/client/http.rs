//! A tiny HTTP/1.1 client over `std::net::TcpStream`, bounded everywhere,
//! plaintext only.
//!
//! - One connection is kept alive and reused while it was idle for less
//!   than `HTTP_CLIENT_REUSE_SECS` (the controller closes idle ones after
//!   `HTTP_IDLE_TIMEOUT_SECS`). A kept connection that turns out closed
//!   before any byte of the answer came back (the controller closed it
//!   while idle, or restarted) is replaced by a new one, once: such a
//!   request was never processed. Any other failure is the caller's.
//!
//! - `https://` is refused when the URL is parsed: TLS is not built in,
//!   and a silent downgrade to plaintext is never an option.
//! - Redirects are not followed: a 3xx comes back as a response, and the
//!   caller counts it as a failure.
//! - Connect, read and write timeouts always apply; response headers are
//!   capped at 64 KiB and bodies at `max_body`.
//! - The bearer token is a [`Token`], whose Debug and Display print
//!   `<redacted>`.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tapio_wire::limits::MAX_HTTP_HEAD_BYTES as MAX_HEADER_BYTES;

/// A bearer token. Never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(s: String) -> Result<Token, String> {
        let t = s.trim().to_string();
        if t.is_empty() || t.len() > 4096 || t.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("the token must be 1..4096 printable ASCII characters".into());
        }
        Ok(Token(t))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `http://host:port[/prefix]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

/// `url` fit for a message: any `user:password@` is replaced by
/// `<redacted>@`, and control characters are escaped by the logger.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}<redacted>@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

pub fn parse_url(url_in: &str) -> Result<Endpoint, String> {
    if url_in.len() > 2048 {
        return Err("controller URL longer than 2048 bytes".into());
    }
    // Every message below names the URL without its credentials.
    let shown = redacted(url_in);
    let url = url_in;
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!(
            "{shown}: https is not supported by this agent (no TLS is built in) and is never downgraded to plaintext; \
             use http:// inside a trusted network, or a local TLS proxy / service mesh"
        ));
    }
    let rest = url
        .get(7..)
        .filter(|_| lower.starts_with("http://"))
        .ok_or_else(|| format!("{shown}: the controller URL must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "{shown}: credentials in the URL are not supported; use --token-file"
        ));
    }
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("{shown}: bad IPv6 literal"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or("80"))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), "80"),
        }
    };
    if host.is_empty() {
        return Err(format!("{shown}: no host"));
    }
    let port: u16 = port.parse().map_err(|_| format!("{shown}: bad port"))?;
    Ok(Endpoint {
        host,
        port,
        prefix: path.to_string(),
    })
}

/// What went wrong. Only `Connect` proves the request was not delivered;
/// after a timeout or an I/O error the server may have processed it.
#[derive(Debug)]
pub enum HttpError {
    Connect(std::io::Error),
    Timeout,
    Io(std::io::Error),
    Malformed(&'static str),
    TooLarge,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect: {e}"),
            HttpError::Timeout => f.write_str("timed out"),
            HttpError::Io(e) => write!(f, "i/o: {e}"),
            HttpError::Malformed(w) => write!(f, "malformed response: {w}"),
            HttpError::TooLarge => f.write_str("response too large"),
        }
    }
}

fn io_err(e: std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout,
        _ => HttpError::Io(e),
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The answer ended where its length said, and the server did not ask
    /// to close: the connection can carry the next request.
    pub reusable: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Client {
    pub endpoint: Endpoint,
    token: Option<Token>,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub max_body: usize,
    /// The kept-alive connection and since when it is idle.
    kept: RefCell<Option<(TcpStream, Instant)>>,
    /// Shared with the metrics.
    pub counters: std::sync::Arc<ConnectionCounters>,
}

/// `tapio_controller_connections_total{result}`
#[derive(Default)]
pub struct ConnectionCounters {
    /// Connections opened.
    pub opened: AtomicU64,
    /// Kept connections found closed before an answer, and replaced.
    pub replaced: AtomicU64,
}

/// How one exchange on a connection ended.
enum Exchange {
    Done(Response),
    /// Closed before any byte of the answer: the request was not
    /// processed (only trusted on a kept connection).
    ClosedBeforeAnswer(HttpError),
    Failed(HttpError),
}

impl Client {
    pub fn new(endpoint: Endpoint, token: Option<Token>) -> Client {
        Client {
            endpoint,
            token,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            max_body: 4 * 1024 * 1024,
            kept: RefCell::new(None),
            counters: Default::default(),
        }
    }

    fn connect(&self) -> Result<TcpStream, HttpError> {
        let addrs: Vec<SocketAddr> = (self.endpoint.host.as_str(), self.endpoint.port)
            .to_socket_addrs()
            .map_err(HttpError::Connect)?
            .collect();
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.connect_timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        // A connect timeout is a connect failure: nothing was sent.
        Err(match last {
            Some(e) => HttpError::Connect(e),
            None => HttpError::Connect(std::io::Error::other("no address")),
        })
    }

    /// Sends one request and reads the whole response, on the kept
    /// connection when there is a fresh one.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        let reuse = Duration::from_secs(tapio_wire::limits::HTTP_CLIENT_REUSE_SECS);
        let kept = self
            .kept
            .borrow_mut()
            .take()
            .filter(|(_, idle)| idle.elapsed() < reuse);
        if let Some((s, _)) = kept {
            match self.exchange(s, method, path, headers, body) {
                Exchange::Done(r) => return Ok(r),
                Exchange::Failed(e) => return Err(e),
                Exchange::ClosedBeforeAnswer(_) => {
                    self.counters.replaced.fetch_add(1, Relaxed);
                }
            }
        }
        let s = self.connect()?;
        self.counters.opened.fetch_add(1, Relaxed);
        s.set_read_timeout(Some(self.io_timeout))
            .map_err(HttpError::Io)?;
        s.set_write_timeout(Some(self.io_timeout))
            .map_err(HttpError::Io)?;
        let _ = s.set_nodelay(true);
        match self.exchange(s, method, path, headers, body) {
            Exchange::Done(r) => Ok(r),
            Exchange::Failed(e) | Exchange::ClosedBeforeAnswer(e) => Err(e),
        }
    }

    fn exchange(
        &self,
        mut s: TcpStream,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Exchange {
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: tapio-agent/{}\r\nAccept: application/json\r\n",
            self.endpoint.prefix,
            self.endpoint.host,
            self.endpoint.port,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = &self.token {
            head.push_str("Authorization: Bearer ");
            head.push_str(t.expose());
            head.push_str("\r\n");
        }
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        // A write refused by a closed peer, or an answer that never began,
        // means the request was not processed.
        let sent = s
            .write_all(head.as_bytes())
            .and_then(|()| body.map_or(Ok(()), |b| s.write_all(b)))
            .and_then(|()| s.flush());
        if let Err(e) = sent {
            return match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    Exchange::ClosedBeforeAnswer(HttpError::Io(e))
                }
                _ => Exchange::Failed(io_err(e)),
            };
        }
        let mut got_any = false;
        let result = read_response(
            &mut Counting {
                inner: &mut s,
                got_any: &mut got_any,
            },
            self.max_body,
        );
        match result {
            Ok(r) => {
                if r.reusable {
                    *self.kept.borrow_mut() = Some((s, Instant::now()));
                }
                Exchange::Done(r)
            }
            Err(e) if !got_any && !matches!(e, HttpError::Timeout) => {
                Exchange::ClosedBeforeAnswer(e)
            }
            Err(e) => Exchange::Failed(e),
        }
    }
}

/// A reader that notes whether any byte came.
struct Counting<'a, R> {
    inner: &'a mut R,
    got_any: &'a mut bool,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.got_any |= n > 0;
        Ok(n)
    }
}

/// Parses one HTTP/1.1 response from `r`, bounded.
pub fn read_response<R: Read>(r: &mut R, max_body: usize) -> Result<Response, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEADER_BYTES {
            return Err(HttpError::TooLarge);
        }
        let n = r.read(&mut chunk).map_err(io_err)?;
        if n == 0 {
            return Err(HttpError::Malformed(
                "connection closed before the headers ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end])
        .map_err(|_| HttpError::Malformed("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or(HttpError::Malformed("bad status code"))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or(HttpError::Malformed("bad header line"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut rest = buf[header_end + 4..].to_vec();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let mut reusable = version == "HTTP/1.1"
        && !get("Connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    let body = if status == 304 || status == 204 || (100..200).contains(&status) {
        reusable &= rest.is_empty();
        Vec::new()
    } else if let Some(cl) = get("Content-Length") {
        let cl: usize = cl
            .parse()
            .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
        if cl > max_body {
            return Err(HttpError::TooLarge);
        }
        while rest.len() < cl {
            let n = r.read(&mut chunk).map_err(io_err)?;
            if n == 0 {
                return Err(HttpError::Malformed("connection closed mid-body"));
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        // Bytes past the answer were never asked for: do not reuse.
        reusable &= rest.len() == cl;
        rest.truncate(cl);
        rest
    } else if get("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Err(HttpError::Malformed(
            "chunked responses are not expected from a tapio controller",
        ));
    } else {
        // Until the connection closes.
        reusable = false;
        loop {
            if rest.len() > max_body {
                return Err(HttpError::TooLarge);
            }
            let n = r.read(&mut chunk).map_err(io_err)?;
            if n == 0 {
                break rest;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
    };
    Ok(Response {
        status,
        headers,
        body,
        reusable,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://ctl.tapio.svc:7070").unwrap(),
            Endpoint {
                host: "ctl.tapio.svc".into(),
                port: 7070,
                prefix: String::new()
            }
        );
        assert_eq!(
            parse_url("http://10.0.0.1/tapio/").unwrap().prefix,
            "/tapio"
        );
        assert_eq!(parse_url("http://[::1]:9").unwrap().host, "::1");
        assert_eq!(parse_url("HTTP://h").unwrap().port, 80);
        let e = parse_url("https://ctl:7070").unwrap_err();
        assert!(
            e.contains("https is not supported") && e.contains("never downgraded"),
            "{e}"
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://u:p@h:1").is_err());
        assert!(parse_url("http://h:99999").is_err());
        assert!(parse_url("http://:80").is_err());
    }

    #[test]
    fn credentials_in_a_url_never_reach_a_message() {
        for url in [
            "http://admin:s3cret@ctl:7070/x",
            "https://admin:s3cret@ctl:7070",
            "http://admin:s3cret@:7070",
            "ftp://admin:s3cret@ctl",
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(!e.contains("s3cret") && !e.contains("admin"), "{e}");
            assert!(e.contains("<redacted>@"), "{e}");
        }
        assert_eq!(redacted("http://ctl:7070/a@b"), "http://ctl:7070/a@b");
        assert_eq!(redacted("http://u@ctl"), "http://<redacted>@ctl");
    }

    #[test]
    fn token_is_redacted() {
        let t = Token::new("s3cr3t-value\n".into()).unwrap();
        assert_eq!(format!("{t:?} {t}"), "Token(<redacted>) <redacted>");
        assert_eq!(t.expose(), "s3cr3t-value");
        assert!(Token::new("has space".into()).is_err());
        assert!(Token::new(String::new()).is_err());
    }

    #[test]
    fn responses_parse_bounded() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: \"x\"\r\n\r\n{}";
        let r = read_response(&mut &ok[..], 100).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("etag")),
            (200, &b"{}"[..], Some("\"x\""))
        );
        let nm = b"HTTP/1.1 304 Not Modified\r\n\r\n";
        assert_eq!(read_response(&mut &nm[..], 100).unwrap().status, 304);
        let eof = b"HTTP/1.1 500 Oops\r\n\r\nbody until close";
        assert_eq!(
            read_response(&mut &eof[..], 100).unwrap().body,
            b"body until close"
        );
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        assert!(matches!(
            read_response(&mut &big[..], 100),
            Err(HttpError::TooLarge)
        ));
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(matches!(
            read_response(&mut &cut[..], 100),
            Err(HttpError::Malformed(_))
        ));
        let garbage = b"SSH-2.0-OpenSSH\r\n\r\n";
        assert!(matches!(
            read_response(&mut &garbage[..], 100),
            Err(HttpError::Malformed(_))
        ));
        let nohead = b"HTTP/1.1 200 OK\r\nContent-";
        assert!(matches!(
            read_response(&mut &nohead[..], 100),
            Err(HttpError::Malformed(_))
        ));
    }
}
