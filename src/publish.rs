//! Port publishing: the `-p`-style spec, and host-port claims in the run dir.
//!
//! A claim is a file `ports/PROTO/PORT/HOST_IP` holding the container id, made under one short
//! lock (`locks/ports.lock`): a wildcard claim (0.0.0.0) needs the port free on every address, a
//! specific one needs it free on that address and on the wildcard. Random host ports rotate
//! through 49153-65535 from a cursor, so a just-released port is not reused at once.

use crate::error::{Error, Result};
use crate::names::ContainerId;
use crate::state::{self, Dirs};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use crate::firewall::L4;

/// The pool random host ports come from (Docker's and the kernel's ephemeral range).
pub const EPHEMERAL: std::ops::RangeInclusive<u16> = 49153..=65535;

/// One parsed publish spec, before host ports are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    pub host_ip: Option<Ipv4Addr>,
    /// `None`: take free ports from the pool. A range with one container port: take one free
    /// port of the range.
    pub host_ports: Option<(u16, u16)>,
    pub container_ports: (u16, u16),
    pub proto: L4,
}

/// One published port, as recorded and as `port ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Published {
    pub protocol: L4,
    /// `None` means every address of the host.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

impl Published {
    pub fn forward(&self) -> crate::firewall::Forward4 {
        crate::firewall::Forward4 {
            proto: self.protocol,
            host_ip: self.host_ip,
            host_port: self.host_port,
            ip: self.container_ip,
            port: self.container_port,
        }
    }
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = self
            .host_ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "0.0.0.0".into());
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.name()
        )
    }
}

fn bad(spec: &str, why: impl Into<String>) -> Error {
    Error::invalid(
        format!("publish spec {spec:?}"),
        why,
        "write [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|udp|sctp], e.g. 8080:80/tcp",
    )
}

fn parse_range(spec: &str, s: &str, allow_zero: bool) -> Result<(u16, u16)> {
    let one = |p: &str| -> Result<u16> {
        let n: u16 = p
            .parse()
            .map_err(|_| bad(spec, format!("{p:?} is not a port number (0-65535)")))?;
        if n == 0 && !allow_zero {
            return Err(bad(spec, "container port 0 is not a port"));
        }
        Ok(n)
    };
    match s.split_once('-') {
        None => {
            let p = one(s)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a == 0 || b == 0 {
                return Err(bad(spec, "a range cannot include port 0"));
            }
            if b < a {
                return Err(bad(spec, format!("range {a}-{b} is reversed")));
            }
            Ok((a, b))
        }
    }
}

/// Parse one spec.
pub fn parse(spec: &str) -> Result<PublishSpec> {
    let s = spec.trim();
    if s.is_empty() {
        return Err(bad(spec, "is empty"));
    }
    let (addr_ports, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (
            a,
            match p.to_ascii_lowercase().as_str() {
                "tcp" => L4::Tcp,
                "udp" => L4::Udp,
                "sctp" => L4::Sctp,
                other => return Err(bad(spec, format!("unknown protocol {other:?}"))),
            },
        ),
        None => (s, L4::Tcp),
    };
    if addr_ports.starts_with('[') {
        return Err(bad(spec, "IPv6 host addresses are not supported yet"));
    }
    let parts: Vec<&str> = addr_ports.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), Some(*h), *c),
        _ => return Err(bad(spec, "has too many ':'")),
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(i) => {
            let a: Ipv4Addr = i
                .parse()
                .map_err(|_| bad(spec, format!("{i:?} is not an IPv4 address")))?;
            if a.is_unspecified() {
                None
            } else {
                Some(a)
            }
        }
    };
    let container_ports = parse_range(spec, ctr, false)?;
    let host_ports = match host {
        None | Some("") => None,
        Some(h) => match parse_range(spec, h, true)? {
            (0, 0) => None,
            r => Some(r),
        },
    };
    let clen = container_ports.1 - container_ports.0;
    if let Some((a, b)) = host_ports {
        let hlen = b - a;
        if hlen != clen && clen != 0 {
            return Err(bad(
                spec,
                format!(
                    "host range {a}-{b} and container range {}-{} differ in length",
                    container_ports.0, container_ports.1
                ),
            ));
        }
    } else {
        let pool = (EPHEMERAL.end() - EPHEMERAL.start()) as u32 + 1;
        if clen as u32 + 1 > pool {
            return Err(bad(
                spec,
                format!(
                    "needs {} random host ports, more than the pool 49153-65535 has",
                    clen as u32 + 1
                ),
            ));
        }
    }
    Ok(PublishSpec {
        host_ip,
        host_ports,
        container_ports,
        proto,
    })
}

/// The run-dir port claims. Every method expects the caller to hold `Dirs::ports_lock`.
pub struct PortClaims {
    dir: PathBuf,
}

impl PortClaims {
    pub fn open(dirs: &Dirs) -> Result<Self> {
        let dir = dirs.run.join("ports");
        state::ensure_dir(&dir)?;
        Ok(PortClaims { dir })
    }

    fn port_dir(&self, proto: L4, port: u16) -> PathBuf {
        self.dir.join(proto.name()).join(port.to_string())
    }

    fn key(ip: Option<Ipv4Addr>) -> String {
        ip.map(|i| i.to_string())
            .unwrap_or_else(|| "0.0.0.0".into())
    }

    /// Who holds `port` in a way that conflicts with a claim on `ip`.
    pub fn conflict(&self, proto: L4, ip: Option<Ipv4Addr>, port: u16) -> Result<Option<String>> {
        let d = self.port_dir(proto, port);
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("reading {}", d.display()),
                    e,
                    "check the run dir",
                ))
            }
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if ip.is_none() || name == "0.0.0.0" || name == Self::key(ip) {
                let holder = state::read_optional(&e.path())?.unwrap_or_default();
                return Ok(Some(format!(
                    "{} ({name}:{port}/{})",
                    holder.trim(),
                    proto.name()
                )));
            }
        }
        Ok(None)
    }

    fn write_claim(
        &self,
        proto: L4,
        ip: Option<Ipv4Addr>,
        port: u16,
        id: &ContainerId,
    ) -> Result<()> {
        let d = self.port_dir(proto, port);
        state::ensure_dir(&d)?;
        state::atomic_write(&d.join(Self::key(ip)), id.as_str().as_bytes(), false)
    }

    /// Claim host ports for one spec; returns the (host, container) port pairs.
    pub fn claim(
        &self,
        spec: &PublishSpec,
        id: &ContainerId,
        raw: &str,
    ) -> Result<Vec<(u16, u16)>> {
        let (c0, c1) = spec.container_ports;
        let pairs: Vec<(u16, u16)> = match spec.host_ports {
            Some((h0, h1)) if c0 == c1 && h1 > h0 => {
                // A host range for one container port: the first free port of the range.
                let mut chosen = None;
                for h in h0..=h1 {
                    if self.conflict(spec.proto, spec.host_ip, h)?.is_none() {
                        chosen = Some(h);
                        break;
                    }
                }
                let h = chosen.ok_or_else(|| {
                    Error::invalid(
                        format!("publish {raw}"),
                        format!("every host port of {h0}-{h1} is taken"),
                        "choose another range",
                    )
                })?;
                vec![(h, c0)]
            }
            Some((h0, _)) => {
                let pairs: Vec<(u16, u16)> = (c0..=c1).map(|c| (h0 + (c - c0), c)).collect();
                for (h, _) in &pairs {
                    if let Some(holder) = self.conflict(spec.proto, spec.host_ip, *h)? {
                        return Err(Error::invalid(
                            format!("publish {raw}"),
                            format!(
                                "host port {h}/{} is already published by {holder}",
                                spec.proto.name()
                            ),
                            "choose another host port or stop that container",
                        ));
                    }
                }
                pairs
            }
            None => {
                let mut out = Vec::new();
                let mut cursor = self.cursor(spec.proto);
                for c in c0..=c1 {
                    let h = self.next_free(spec.proto, spec.host_ip, &mut cursor, &out)?;
                    out.push((h, c));
                }
                self.set_cursor(spec.proto, cursor)?;
                out
            }
        };
        for (h, _) in &pairs {
            self.write_claim(spec.proto, spec.host_ip, *h, id)?;
        }
        Ok(pairs)
    }

    fn cursor(&self, proto: L4) -> u16 {
        std::fs::read_to_string(self.dir.join(format!("last-{}", proto.name())))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(*EPHEMERAL.end())
    }

    fn set_cursor(&self, proto: L4, c: u16) -> Result<()> {
        state::atomic_write(
            &self.dir.join(format!("last-{}", proto.name())),
            c.to_string().as_bytes(),
            false,
        )
    }

    fn next_free(
        &self,
        proto: L4,
        ip: Option<Ipv4Addr>,
        cursor: &mut u16,
        taken: &[(u16, u16)],
    ) -> Result<u16> {
        let (lo, hi) = (*EPHEMERAL.start() as u32, *EPHEMERAL.end() as u32);
        let size = hi - lo + 1;
        for _ in 0..size {
            let next = if (*cursor as u32) >= hi || (*cursor as u32) < lo {
                lo
            } else {
                *cursor as u32 + 1
            };
            *cursor = next as u16;
            if taken.iter().any(|(h, _)| *h == *cursor) {
                continue;
            }
            if self.conflict(proto, ip, *cursor)?.is_none() {
                return Ok(*cursor);
            }
        }
        Err(Error::invalid(
            "host ports",
            "every port of 49153-65535 is published",
            "unpublish ports or give host ports explicitly",
        ))
    }

    /// Release a claim if `id` holds it.
    pub fn release(&self, p: &Published, id: &ContainerId) -> Result<()> {
        let d = self.port_dir(p.protocol, p.host_port);
        let f = d.join(Self::key(p.host_ip));
        if let Some(h) = state::read_optional(&f)? {
            if h.trim() == id.as_str() {
                state::remove_file(&f)?;
                let _ = std::fs::remove_dir(&d);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let p = parse("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_ports, p.container_ports, p.proto),
            (None, Some((8080, 8080)), (80, 80), L4::Tcp)
        );
        let p = parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.proto, L4::Udp);
        assert_eq!(parse("80").unwrap().host_ports, None);
        assert_eq!(parse("0:80").unwrap().host_ports, None);
        assert_eq!(parse("127.0.0.1::80").unwrap().host_ports, None);
        assert_eq!(parse("0.0.0.0:81:80").unwrap().host_ip, None);
        let p = parse("8000-8010:80-90/sctp").unwrap();
        assert_eq!(
            (p.host_ports, p.container_ports),
            (Some((8000, 8010)), (80, 90))
        );
        assert_eq!(parse("8000-8010:80").unwrap().container_ports, (80, 80));
    }

    #[test]
    fn bad_specs() {
        for s in [
            "",
            "0",
            "80:0",
            "90-80",
            "8000-8010:80-85",
            "80/icmp",
            "a:80",
            "1.2.3:80:80",
            "[::1]:80:80",
            "70000",
            "1:2:3:4",
            "49000-65535",
        ] {
            assert!(parse(s).is_err(), "{s:?} accepted");
        }
        let e = parse("80-70").unwrap_err().to_string();
        assert!(e.contains("reversed"), "{e}");
    }

    #[test]
    fn claims_conflict_and_release() {
        let base = std::env::temp_dir().join(format!("nethook-ports-{}", std::process::id()));
        let dirs = Dirs::new(base.join("c"), base.join("r"));
        let claims = PortClaims::open(&dirs).unwrap();
        let a = ContainerId::new("a").unwrap();
        let b = ContainerId::new("b").unwrap();
        let got = claims
            .claim(&parse("8080:80").unwrap(), &a, "8080:80")
            .unwrap();
        assert_eq!(got, vec![(8080, 80)]);
        let e = claims
            .claim(&parse("8080:81").unwrap(), &b, "8080:81")
            .unwrap_err()
            .to_string();
        assert!(e.contains("published by a"), "{e}");
        // Specific address vs wildcard conflicts; another protocol does not.
        assert!(claims
            .claim(&parse("10.0.0.1:8080:80").unwrap(), &b, "x")
            .is_err());
        assert!(claims
            .claim(&parse("8080:80/udp").unwrap(), &b, "x")
            .is_ok());
        // Two specific addresses share a port.
        claims
            .claim(&parse("10.0.0.1:9090:80").unwrap(), &a, "x")
            .unwrap();
        claims
            .claim(&parse("10.0.0.2:9090:80").unwrap(), &b, "x")
            .unwrap();
        assert!(claims.claim(&parse("9090:80").unwrap(), &b, "x").is_err());
        // Random ports rotate and never repeat while held.
        let r1 = claims.claim(&parse("80").unwrap(), &a, "80").unwrap()[0].0;
        let r2 = claims.claim(&parse("80").unwrap(), &b, "80").unwrap()[0].0;
        assert!(EPHEMERAL.contains(&r1) && EPHEMERAL.contains(&r2) && r1 != r2);
        // Release by the holder only.
        let p = Published {
            protocol: L4::Tcp,
            host_ip: None,
            host_port: 8080,
            container_ip: Ipv4Addr::LOCALHOST,
            container_port: 80,
        };
        claims.release(&p, &b).unwrap();
        assert!(claims.claim(&parse("8080:80").unwrap(), &b, "x").is_err());
        claims.release(&p, &a).unwrap();
        assert!(claims.claim(&parse("8080:80").unwrap(), &b, "x").is_ok());
        // A host range for one container port takes the first free one.
        assert_eq!(
            claims
                .claim(&parse("8080-8082:80").unwrap(), &a, "x")
                .unwrap(),
            vec![(8081, 80)]
        );
        std::fs::remove_dir_all(base).unwrap();
    }
}
