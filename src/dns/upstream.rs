//! Forwarding names the daemon does not own: to the network's `--dns-upstream` servers, else the
//! host's resolv.conf servers (re-read when the file changes; 127.x stubs skipped, with
//! systemd-resolved's real list behind them), at most 3, one after the other, over UDP with a
//! TCP retry when the answer comes back truncated.
//!
//! The packet goes out as the client sent it, with a fresh random id on a fresh socket (random
//! port), and only a reply from that server, with that id and the same question, comes back.

use super::answer::MAX_UDP;
use crate::config::MAX_DNS_UPSTREAMS;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const DNS_PORT: u16 = 53;
/// How long one upstream gets over UDP before the next is tried.
pub const UDP_TIMEOUT: Duration = Duration::from_millis(2000);
/// Connect, send and read back over TCP.
pub const TCP_TIMEOUT: Duration = Duration::from_millis(3000);
/// How often the resolv.conf files are looked at (a stat each).
const RECHECK: Duration = Duration::from_millis(500);

pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// The name servers of a resolv.conf text that a forwarder can use: not loopback stubs, at most
/// 3 (what the libc resolvers use).
pub fn parse_resolv_conf(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() != Some("nameserver") {
            continue;
        }
        if let Some(Ok(ip)) = it.next().map(str::parse::<Ipv4Addr>) {
            if !ip.is_loopback()
                && !ip.is_unspecified()
                && !out.contains(&ip)
                && out.len() < MAX_DNS_UPSTREAMS
            {
                out.push(ip);
            }
        }
    }
    out
}

type Stamp = Option<(u64, u64, i64, i64, u64)>;

fn stamp(p: &PathBuf) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// The host's resolvers, re-read when either file changes.
#[derive(Debug)]
pub struct HostResolvers {
    main: PathBuf,
    systemd: PathBuf,
    checked: Option<Instant>,
    stamps: (Stamp, Stamp),
    servers: Vec<Ipv4Addr>,
}

impl HostResolvers {
    pub fn new(main: PathBuf, systemd: PathBuf) -> HostResolvers {
        HostResolvers {
            main,
            systemd,
            checked: None,
            stamps: (None, None),
            servers: Vec::new(),
        }
    }

    pub fn servers(&mut self) -> Vec<Ipv4Addr> {
        if self.checked.is_none_or(|t| t.elapsed() >= RECHECK) {
            self.checked = Some(Instant::now());
            // stat follows the usual symlink (/etc/resolv.conf -> ../run/...): its target's
            // changes are seen too.
            let now = (stamp(&self.main), stamp(&self.systemd));
            if now != self.stamps || self.servers.is_empty() {
                self.stamps = now;
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p)
                        .map(|t| parse_resolv_conf(&t))
                        .unwrap_or_default()
                };
                let mut s = read(&self.main);
                if s.is_empty() {
                    // Only stubs (systemd-resolved's 127.0.0.53): the servers behind them.
                    s = read(&self.systemd);
                }
                self.servers = s;
            }
        }
        self.servers.clone()
    }
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most 2 bytes into the buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 2, 0) };
    if n != 2 {
        // No entropy source: the clock's nanoseconds still vary per query.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return (t ^ (t >> 16)) as u16;
    }
    u16::from_ne_bytes(b)
}

/// End of the question section of a query (its single question), or None if malformed.
fn question_end(p: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = *p.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 == 0xc0 {
            i += 2;
            break;
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 4;
    (end <= p.len()).then_some(end)
}

/// True when `reply` answers `query` (same id, a response, the same question).
fn matches(query: &[u8], qend: usize, reply: &[u8]) -> bool {
    reply.len() >= qend
        && reply[..2] == query[..2]
        && reply[2] & 0x80 != 0
        && reply[4..6] == query[4..6]
        && reply[12..qend].eq_ignore_ascii_case(&query[12..qend])
}

fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

fn truncated(reply: &[u8]) -> bool {
    reply[2] & 0x02 != 0
}

async fn udp_exchange(server: Ipv4Addr, q: &[u8], qend: usize) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .await
        .ok()?;
    sock.connect(SocketAddrV4::new(server, DNS_PORT))
        .await
        .ok()?;
    sock.send(q).await.ok()?;
    // One byte more than the daemon ever sends over UDP: a fuller datagram was cut, and counts
    // as truncated (the TCP retry gets it whole). Keeps a flood of forwards at 4 KiB each.
    let mut buf = vec![0u8; MAX_UDP + 1];
    let deadline = tokio::time::Instant::now() + UDP_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            // Timeout, or ICMP unreachable (ECONNREFUSED on a connected socket): next server.
            _ => return None,
        };
        if matches(q, qend, &buf[..n]) {
            if n > MAX_UDP {
                // Header and question only, TC set: what a server sends when it truncates.
                buf.truncate(qend);
                buf[2] |= 0x02;
                buf[6..12].fill(0);
                return Some(buf);
            }
            buf.truncate(n);
            return Some(buf);
        }
        // Someone else's datagram (the connected socket already filters the source): ignore.
    }
}

async fn tcp_exchange(server: Ipv4Addr, q: &[u8], qend: usize) -> Option<Vec<u8>> {
    let work = async {
        let mut s = TcpStream::connect(SocketAddrV4::new(server, DNS_PORT))
            .await
            .ok()?;
        let mut out = Vec::with_capacity(q.len() + 2);
        out.extend_from_slice(&(q.len() as u16).to_be_bytes());
        out.extend_from_slice(q);
        s.write_all(&out).await.ok()?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.ok()?;
        matches(q, qend, &buf).then_some(buf)
    };
    tokio::time::timeout(TCP_TIMEOUT, work).await.ok().flatten()
}

/// Forward `packet` (a query that passed `answer::handle`) to `servers` in order. `tcp`: the
/// client asked over TCP, so the upstream is asked over TCP too. Returns the reply with the
/// client's id, or None when no server answered (the caller sends SERVFAIL).
pub async fn forward(
    packet: &[u8],
    servers: &[Ipv4Addr],
    tcp: bool,
    udp_limit: usize,
) -> Option<Vec<u8>> {
    let qend = question_end(packet)?;
    let mut q = packet.to_vec();
    q[..2].copy_from_slice(&random_id().to_be_bytes());
    let mut fallback: Option<Vec<u8>> = None;
    for &server in servers.iter().take(MAX_DNS_UPSTREAMS) {
        let reply = if tcp {
            tcp_exchange(server, &q, qend).await
        } else {
            match udp_exchange(server, &q, qend).await {
                Some(r) if truncated(&r) => match tcp_exchange(server, &q, qend).await {
                    // The whole answer, where it fits the client's UDP limit; else the truncated
                    // one, and the client comes back over TCP.
                    Some(full) if full.len() <= udp_limit => Some(full),
                    _ => Some(r),
                },
                r => r,
            }
        };
        let Some(mut reply) = reply else {
            continue;
        };
        reply[..2].copy_from_slice(&packet[..2]);
        // SERVFAIL or REFUSED: another server may do better.
        if matches!(rcode(&reply), 2 | 5) {
            fallback = Some(reply);
            continue;
        }
        return Some(reply);
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_skips_stubs_and_caps_at_three() {
        let t = "# x\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch a b\nnameserver 10.0.0.1\nnameserver fe80::1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        let ips: Vec<Ipv4Addr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(parse_resolv_conf(t), ips);
        assert!(parse_resolv_conf("nameserver 127.0.0.53\noptions edns0\n").is_empty());
    }

    #[test]
    fn host_resolvers_follow_the_file_and_the_systemd_list() {
        let dir = std::env::temp_dir().join(format!("nethook-dns-up-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (main, sd) = (dir.join("resolv.conf"), dir.join("sd.conf"));
        std::fs::write(&main, "nameserver 127.0.0.53\n").unwrap();
        std::fs::write(&sd, "nameserver 192.0.2.9\n").unwrap();
        let mut h = HostResolvers::new(main.clone(), sd.clone());
        assert_eq!(h.servers(), vec!["192.0.2.9".parse::<Ipv4Addr>().unwrap()]);
        std::fs::write(&main, "nameserver 192.0.2.10\nnameserver 192.0.2.11\n").unwrap();
        h.checked = None;
        assert_eq!(h.servers().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn question_matching() {
        let q = [
            0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1,
        ];
        let end = question_end(&q).unwrap();
        assert_eq!(end, q.len());
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[14] = b'E';
        assert!(matches(&q, end, &r));
        r[1] ^= 1;
        assert!(!matches(&q, end, &r));
        assert!(question_end(&q[..15]).is_none());
    }
}
