//! The smallest HTTP/1.1 client etcd's v3 JSON gateway needs: POST a JSON body, read the answer
//! (Content-Length, chunked, or to EOF), and for watches read a chunked stream of JSON objects
//! as it arrives. Plain TCP only (etcd's client port on a trusted underlay; TLS is not done).
//! Everything has a timeout, so a hook never hangs on an unreachable etcd.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `http://HOST:PORT` split into what a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http:// URL (TLS is not supported)"))?;
        let hostport = rest.trim_end_matches('/');
        if hostport.contains('/') {
            return Err(format!("{url:?} has a path; give http://HOST:PORT"));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>()
                    .map_err(|_| format!("{url:?} has a bad port"))?,
            ),
            _ => (hostport, 2379),
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }

    fn connect(&self, timeout: Duration) -> std::io::Result<TcpStream> {
        let mut last = None;
        for a in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
    }

    fn send(&self, s: &mut TcpStream, path: &str, body: &[u8], close: bool) -> std::io::Result<()> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            self.host,
            self.port,
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        let mut buf = head.into_bytes();
        buf.extend_from_slice(body);
        s.write_all(&buf)
    }

    /// POST `body` to `path`; the response body on HTTP 200, else an error with the status and
    /// what the server said.
    pub fn post(&self, path: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let mut s = self.connect(timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .and_then(|_| s.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        self.send(&mut s, path, body, true)
            .map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let (status, framing) = read_head(&mut r).map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        Body { r, framing }
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Ok(body)
    }

    /// POST `body` to a streaming endpoint and return the open body; `read_timeout` bounds each
    /// wait for data (None: wait as long as it takes). Also returns a handle to shut it down.
    pub fn stream(
        &self,
        path: &str,
        body: &[u8],
        connect_timeout: Duration,
        read_timeout: Option<Duration>,
    ) -> Result<(impl Read, TcpStream), String> {
        let mut s = self.connect(connect_timeout).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(connect_timeout))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(connect_timeout))
            .map_err(|e| e.to_string())?;
        self.send(&mut s, path, body, false)
            .map_err(|e| e.to_string())?;
        let handle = s.try_clone().map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let (status, framing) = read_head(&mut r).map_err(|e| e.to_string())?;
        r.get_ref()
            .set_read_timeout(read_timeout)
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        Ok((Body { r, framing }, handle))
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(u64),
    /// Bytes left in the current chunk; None before the first chunk header.
    Chunked(Option<u64>),
    ToEof,
}

fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Framing)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {:?}", line.trim())))?;
    let mut framing = Framing::ToEof;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                framing = Framing::Length(v.parse().map_err(std::io::Error::other)?);
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked(None);
            }
        }
    }
    Ok((status, framing))
}

/// A response body with its framing undone.
struct Body<R> {
    r: R,
    framing: Framing,
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.framing {
            Framing::ToEof => self.r.read(buf),
            Framing::Length(0) => Ok(0),
            Framing::Length(n) => {
                let max = buf.len().min(n as usize);
                let got = self.r.read(&mut buf[..max])?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.framing = Framing::Length(n - got as u64);
                Ok(got)
            }
            Framing::Chunked(left) => {
                let left = match left {
                    Some(n) if n > 0 => n,
                    _ => {
                        if left == Some(0) {
                            // The CRLF after the previous chunk's data.
                            let mut crlf = String::new();
                            self.r.read_line(&mut crlf)?;
                        }
                        let mut size = String::new();
                        if self.r.read_line(&mut size)? == 0 {
                            return Ok(0);
                        }
                        let hex = size.trim().split(';').next().unwrap_or("");
                        let n = u64::from_str_radix(hex, 16).map_err(|_| {
                            std::io::Error::other(format!("bad chunk size {:?}", size.trim()))
                        })?;
                        if n == 0 {
                            self.framing = Framing::Length(0);
                            return Ok(0);
                        }
                        n
                    }
                };
                let max = buf.len().min(left as usize);
                let got = self.r.read(&mut buf[..max])?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.framing = Framing::Chunked(Some(left - got as u64));
                Ok(got)
            }
        }
    }
}

/// Standard base64 (etcd's JSON gateway carries keys and values as proto `bytes`).
pub fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn unb64(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for ch in s.bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return Err(format!("bad base64 {s:?}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "/nethook/v1/\u{ff}",
        ] {
            let e = b64(s.as_bytes());
            assert_eq!(unb64(&e).unwrap(), s.as_bytes(), "{s:?} -> {e}");
        }
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64(b"fo"), "Zm8=");
    }

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let (st, fr) = read_head(&mut r).unwrap();
        let mut out = String::new();
        Body { r, framing: fr }.read_to_string(&mut out).unwrap();
        assert_eq!((st, out.as_str()), (200, "abcdefgh"));
    }

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://192.168.100.254:2379").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("192.168.100.254", 2379));
        assert_eq!(Endpoint::parse("http://etcd/").unwrap().port, 2379);
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("x:1").is_err());
    }
}
