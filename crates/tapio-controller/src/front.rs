//! The guard in front of tiny_http.
//!
//! tiny_http reads a request's header lines without a length limit, so a
//! client sending an endless header would grow the controller's memory
//! without bound. The front accepts every TCP connection itself, reads the
//! request head under a hard limit (64 KiB) and a total deadline, and only
//! then hands the connection to tiny_http over a private Unix socket, with
//! `Connection: close` forced so every head on it is checked. Bodies stream
//! through; tiny_http's handlers enforce the body limit while reading.
//!
//! Everything is bounded: concurrent connections (beyond the limit a new
//! one is closed at once, counted), head size, head time, and the socket
//! timeouts of both legs.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub use tapio_wire::limits::MAX_HTTP_HEAD_BYTES as MAX_HEAD_BYTES;

#[derive(Default)]
pub struct FrontCounters {
    pub refused_busy: AtomicU64,
    pub head_too_large: AtomicU64,
    pub head_timeouts: AtomicU64,
}

pub struct Front {
    pub backend: PathBuf,
    /// Bodies up to this size with a Content-Length are read here whole
    /// (one thread per request); larger or chunked ones stream through.
    pub max_body: usize,
    pub io_timeout: Duration,
    pub head_deadline: Duration,
    pub max_connections: usize,
    pub active: AtomicUsize,
    pub counters: FrontCounters,
}

/// Where the request head ends (after the blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The declared Content-Length, unless the body is chunked.
fn content_length(head: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(head);
    let mut cl = None;
    for line in text.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if k.eq_ignore_ascii_case("content-length") {
            cl = v.trim().parse().ok();
        }
    }
    Some(cl.unwrap_or(0))
}

/// The head with any Connection header replaced by `Connection: close`.
fn rewrite_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(head.len() + 20);
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0
            && line
                .split(':')
                .next()
                .is_some_and(|k| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn reply(stream: &mut TcpStream, code: tapio_wire::ErrorCode, message: &str) {
    let status = match code.http_status() {
        431 => "431 Request Header Fields Too Large",
        _ => "500 Internal Server Error",
    };
    let body = crate::errors::ApiError::new(code, message).body();
    let body = String::from_utf8_lossy(&body);
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

impl Front {
    fn serve(&self, mut client: TcpStream) {
        let _ = client.set_write_timeout(Some(self.io_timeout));
        let deadline = Instant::now() + self.head_deadline;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(e) = head_end(&buf) {
                break e;
            }
            if buf.len() > MAX_HEAD_BYTES {
                self.counters.head_too_large.fetch_add(1, Relaxed);
                reply(
                    &mut client,
                    tapio_wire::ErrorCode::HeadersTooLarge,
                    "request headers exceed 64 KiB",
                );
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.counters.head_timeouts.fetch_add(1, Relaxed);
                return;
            }
            let _ = client.set_read_timeout(Some(left.min(self.io_timeout)));
            match client.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    self.counters.head_timeouts.fetch_add(1, Relaxed);
                    return;
                }
            }
        };
        // The common case: a small body with a length. Read it whole here,
        // so the request needs no second thread.
        let whole = content_length(&buf[..end])
            .filter(|&n| n <= self.max_body)
            .is_some_and(|n| {
                let want = end + n;
                while buf.len() < want {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    let _ = client.set_read_timeout(Some(left.min(self.io_timeout)));
                    match client.read(&mut chunk) {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            });
        let Ok(mut backend) = UnixStream::connect(&self.backend) else {
            reply(
                &mut client,
                tapio_wire::ErrorCode::InternalError,
                "the controller is not ready",
            );
            return;
        };
        let _ = backend.set_read_timeout(Some(self.io_timeout * 3));
        let _ = backend.set_write_timeout(Some(self.io_timeout));
        let _ = client.set_read_timeout(Some(self.io_timeout));
        if backend.write_all(&rewrite_head(&buf[..end])).is_err()
            || backend.write_all(&buf[end..]).is_err()
        {
            return;
        }
        if whole {
            let _ = std::io::copy(&mut backend, &mut client);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        // Body upstream on a helper thread; the response comes back here.
        let (Ok(mut c2), Ok(mut b2)) = (client.try_clone(), backend.try_clone()) else {
            return;
        };
        let up = std::thread::Builder::new()
            .name("tapio-front-up".into())
            .spawn(move || {
                let mut chunk = [0u8; 16384];
                loop {
                    match c2.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if b2.write_all(&chunk[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = b2.shutdown(Shutdown::Write);
            });
        let _ = std::io::copy(&mut backend, &mut client);
        let _ = client.shutdown(Shutdown::Both);
        let _ = backend.shutdown(Shutdown::Both);
        if let Ok(h) = up {
            let _ = h.join();
        }
    }
}

/// Accepts on `listener` until `stop` returns true (the caller wakes the
/// blocking accept with one last connection).
pub fn run(
    listener: TcpListener,
    front: Arc<Front>,
    stop: fn() -> bool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tapio-accept".into())
        .spawn(move || {
            while !stop() {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        if front.active.load(Relaxed) >= front.max_connections {
                            front.counters.refused_busy.fetch_add(1, Relaxed);
                            let _ = s.shutdown(Shutdown::Both);
                            continue;
                        }
                        front.active.fetch_add(1, Relaxed);
                        let f = Arc::clone(&front);
                        let spawned = std::thread::Builder::new()
                            .name("tapio-front".into())
                            .stack_size(64 * 1024)
                            .spawn(move || {
                                f.serve(s);
                                f.active.fetch_sub(1, Relaxed);
                            });
                        if spawned.is_err() {
                            front.active.fetch_sub(1, Relaxed);
                            front.counters.refused_busy.fetch_add(1, Relaxed);
                        }
                    }
                    // EMFILE and friends: back off briefly instead of spinning.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(
            content_length(b"POST / HTTP/1.1\r\ncontent-length: 12\r\n\r\n"),
            Some(12)
        );
        assert_eq!(
            content_length(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(0)
        );
        assert_eq!(
            content_length(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            ),
            None
        );
    }

    #[test]
    fn heads_are_found_and_rewritten_to_close() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        let h = rewrite_head(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
    }
}
