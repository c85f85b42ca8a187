//! Port publishing: the `-p`-style spec, and host-port claims in the run dir.
//!
//! Host addresses: none (or `0.0.0.0`) publishes on every address of the host, in each family
//! the container has an address of (a dual-stack container gets one [`Published`] per family,
//! with the same host port); `[::]` on every IPv6 address only; an address (`192.0.2.1`,
//! `[fd00::1]`) on that address only, to the container's address of that family. `[::1]` is
//! refused: IPv6 has no `route_localnet`, and measured on 6.18 (a netns, a veth, a DNAT of
//! `[::1]:8080` in output plus a masquerade), the SYN leaves DNATed and masqueraded and the
//! container answers, but the answer, de-NATed back to `::1` on the veth, has no route
//! (`Ip6InNoRoutes`) and is dropped. Publish on `[::]` or on a host address instead.
//!
//! A claim is a file `ports/PROTO/PORT/HOST_IP` holding the container id, made under one short
//! lock (`locks/ports.lock`). `0.0.0.0` is the claim of every address (both families, one file
//! for both of a dual-stack container's forwards), `::` of every IPv6 address, anything else one
//! address. Claims overlap when one is `0.0.0.0`, when both are IPv6 and one is `::`, or when
//! they name the same address; a claim needs the port free of every overlapping one. Random host
//! ports rotate through 49153-65535 from a cursor, so a just-released port is not reused at once.

use crate::error::{Error, Result};
use crate::names::ContainerId;
use crate::state::{self, Dirs};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub use crate::firewall::L4;
use crate::firewall::{Change, Forward4, Forward6};

/// The pool random host ports come from (Docker's and the kernel's ephemeral range).
pub const EPHEMERAL: std::ops::RangeInclusive<u16> = 49153..=65535;

/// One parsed publish spec, before host ports are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    /// `None`: every host address (of each family the container has); `Some(::)`: every IPv6
    /// address; otherwise that address only.
    pub host_ip: Option<IpAddr>,
    /// `None`: take free ports from the pool. A range with one container port: take one free
    /// port of the range.
    pub host_ports: Option<(u16, u16)>,
    pub container_ports: (u16, u16),
    pub proto: L4,
}

impl PublishSpec {
    /// The container addresses this spec forwards to, out of the container's (its first
    /// attachment's) addresses: those of the host address's family, or all without one. An
    /// error when there is none (an IPv6 host address for a container without IPv6).
    pub fn targets(&self, container_ips: &[IpAddr], raw: &str) -> Result<Vec<IpAddr>> {
        let out: Vec<IpAddr> = container_ips
            .iter()
            .copied()
            .filter(|c| self.host_ip.is_none_or(|h| h.is_ipv4() == c.is_ipv4()))
            .collect();
        if out.is_empty() {
            let (host, family) = match self.host_ip {
                Some(h @ IpAddr::V4(_)) => (h.to_string(), "IPv4"),
                Some(h) => (format!("[{h}]"), "IPv6"),
                None => ("every address".to_string(), "any"),
            };
            return Err(Error::invalid(
                format!("publish {raw}"),
                format!(
                    "host address {host} is {family}, and the container has no {family} address"
                ),
                "publish on a host address of a family the container's network has",
            ));
        }
        Ok(out)
    }

    /// The published ports of claimed (host, container) port pairs, one per pair and target.
    pub fn published(&self, pairs: &[(u16, u16)], targets: &[IpAddr]) -> Vec<Published> {
        let mut out = Vec::new();
        for &container_ip in targets {
            for &(h, c) in pairs {
                out.push(Published {
                    protocol: self.proto,
                    host_ip: self.host_ip,
                    host_port: h,
                    container_ip,
                    container_port: c,
                });
            }
        }
        out
    }
}

/// One published port, as recorded and as `port ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "PublishedRecord")]
pub struct Published {
    pub protocol: L4,
    /// `None` means every address of the host (of `container_ip`'s family); `Some(::)` every
    /// IPv6 address (the `[::]` spec; its claim differs). Of `container_ip`'s family.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
}

/// What a record holds; [`Published`] after the family check.
#[derive(Deserialize)]
struct PublishedRecord {
    protocol: L4,
    host_ip: Option<IpAddr>,
    host_port: u16,
    container_ip: IpAddr,
    container_port: u16,
}

impl TryFrom<PublishedRecord> for Published {
    type Error = String;

    fn try_from(r: PublishedRecord) -> std::result::Result<Self, String> {
        let p = Published {
            protocol: r.protocol,
            host_ip: r.host_ip,
            host_port: r.host_port,
            container_ip: r.container_ip,
            container_port: r.container_port,
        };
        p.forward().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

/// A published port as the firewall has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forward {
    V4(Forward4),
    V6(Forward6),
}

impl Published {
    /// The firewall's forward; an error if the host address and the container address are of
    /// different families.
    pub fn forward(&self) -> Result<Forward> {
        // An unspecified host address (`[::]`) is the map without an address.
        let host = self.host_ip.filter(|h| !h.is_unspecified());
        match (self.host_ip, self.container_ip) {
            (None | Some(IpAddr::V4(_)), IpAddr::V4(ip)) => Ok(Forward::V4(Forward4 {
                proto: self.protocol,
                host_ip: match host {
                    Some(IpAddr::V4(h)) => Some(h),
                    _ => None,
                },
                host_port: self.host_port,
                ip,
                port: self.container_port,
            })),
            (None | Some(IpAddr::V6(_)), IpAddr::V6(ip)) => Ok(Forward::V6(Forward6 {
                proto: self.protocol,
                host_ip: match host {
                    Some(IpAddr::V6(h)) => Some(h),
                    _ => None,
                },
                host_port: self.host_port,
                ip,
                port: self.container_port,
            })),
            _ => Err(Error::invalid(
                format!("published port {self}"),
                format!(
                    "host address {} and container address {} are of different families",
                    self.host_ip.map(|h| h.to_string()).unwrap_or_default(),
                    self.container_ip
                ),
                "publish an IPv4 host address to an IPv4 container address, IPv6 to IPv6",
            )),
        }
    }

    /// AddForward4 or AddForward6.
    pub fn add_change(&self) -> Result<Change> {
        Ok(match self.forward()? {
            Forward::V4(f) => Change::AddForward4(f),
            Forward::V6(f) => Change::AddForward6(f),
        })
    }

    /// ExpireForward4 or ExpireForward6.
    pub fn expire_change(&self) -> Result<Change> {
        Ok(match self.forward()? {
            Forward::V4(f) => Change::ExpireForward4(f),
            Forward::V6(f) => Change::ExpireForward6(f),
        })
    }

    /// Whether the firewall has it (for `check`).
    pub fn in_snapshot(&self, s: &crate::firewall::Snapshot) -> bool {
        match self.forward() {
            Ok(Forward::V4(f)) => s.forwards.contains(&f),
            Ok(Forward::V6(f)) => s.forwards6.contains(&f),
            Err(_) => false,
        }
    }

    /// The host side as `port ls` shows it: "0.0.0.0", "[::]", "192.0.2.1", "[fd00::1]".
    pub fn host_ip_display(&self) -> String {
        match (self.host_ip, self.container_ip) {
            (Some(IpAddr::V6(h)), _) => format!("[{h}]"),
            (Some(h), _) => h.to_string(),
            (None, IpAddr::V4(_)) => "0.0.0.0".into(),
            (None, IpAddr::V6(_)) => "[::]".into(),
        }
    }
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = self.host_ip_display();
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
        "write [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|udp|sctp], e.g. 8080:80/tcp or [fd00::1]:8080:80",
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
    let (v6, ports) = match addr_ports.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad(spec, "has '[' without ']'"))?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| bad(spec, format!("[{inside}] is not an IPv6 address")))?;
            if ip.is_loopback() {
                return Err(bad(
                    spec,
                    "[::1] cannot be published: IPv6 has no route_localnet, so the kernel drops the container's replies to ::1; publish on [::] or on a host address",
                ));
            }
            let ports = after
                .strip_prefix(':')
                .ok_or_else(|| bad(spec, format!("needs ':' after [{inside}]")))?;
            (Some(ip), ports)
        }
        None => (None, addr_ports),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, ctr) =
        match (v6, parts.as_slice()) {
            (None, [c]) => (None, None, *c),
            (None, [h, c]) => (None, Some(*h), *c),
            (None, [ip, h, c]) => (Some(*ip), Some(*h), *c),
            (Some(_), [h, c]) => (None, Some(*h), *c),
            (Some(_), _) => return Err(bad(spec, "needs [IPV6]:HOST_PORT:CONTAINER_PORT")),
            (None, _) => return Err(bad(
                spec,
                "has too many ':' (an IPv6 host address goes in brackets, e.g. [fd00::1]:8080:80)",
            )),
        };
    let host_ip: Option<IpAddr> = match (v6, ip) {
        (Some(v6), _) => Some(IpAddr::V6(v6)),
        (None, None | Some("")) => None,
        (None, Some(i)) => {
            let a: Ipv4Addr = i
                .parse()
                .map_err(|_| bad(spec, format!("{i:?} is not an IPv4 address")))?;
            if a.is_unspecified() {
                None
            } else {
                Some(IpAddr::V4(a))
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

    /// The claim file's name: "0.0.0.0" for every address (both families), "::" for every
    /// IPv6 address, else the address.
    fn key(ip: Option<IpAddr>) -> String {
        match ip {
            None | Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) => "0.0.0.0".into(),
            Some(i) => i.to_string(),
        }
    }

    /// Whether claims on `a` and on `b` (file names) overlap. A name that is no address is
    /// taken as a claim of everything.
    fn overlap(a: &str, b: &str) -> bool {
        let all = |k: &str| k == "0.0.0.0" || k.parse::<IpAddr>().is_err();
        let all6 = |k: &str| k == "::";
        let v6 = |k: &str| k.parse::<IpAddr>().is_ok_and(|i| i.is_ipv6());
        a == b || all(a) || all(b) || (all6(a) && v6(b)) || (all6(b) && v6(a))
    }

    /// Who holds `port` in a way that conflicts with a claim on `ip`.
    pub fn conflict(&self, proto: L4, ip: Option<IpAddr>, port: u16) -> Result<Option<String>> {
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
            if Self::overlap(&name, &Self::key(ip)) {
                let holder = state::read_optional(&e.path())?.unwrap_or_default();
                let shown = if name.contains(':') {
                    format!("[{name}]")
                } else {
                    name.clone()
                };
                return Ok(Some(format!(
                    "{} ({shown}:{port}/{})",
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
        ip: Option<IpAddr>,
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
        ip: Option<IpAddr>,
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

    /// Release every claim `id` holds, on any port.
    pub fn release_all(&self, id: &ContainerId) -> Result<()> {
        for proto in state::list_names(&self.dir) {
            let pd = self.dir.join(&proto);
            if !pd.is_dir() {
                continue;
            }
            for port in state::list_names(&pd) {
                let d = pd.join(&port);
                for key in state::list_names(&d) {
                    let f = d.join(&key);
                    if key.starts_with('.') {
                        continue;
                    }
                    if state::read_optional(&f)?.is_some_and(|h| h.trim() == id.as_str()) {
                        state::remove_file(&f)?;
                    }
                }
                let _ = std::fs::remove_dir(&d);
            }
        }
        Ok(())
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
        assert_eq!(p.host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
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
            "::1:8080:80",
            "fd00::1:8080:80",
            "[fd00::1]",
            "[fd00::1]80:80",
            "[fd00::1:8080:80",
            "[1.2.3.4]:80:80",
            "[garbage]:80:80",
            "[fd00::1]:1:2:3",
            "70000",
            "1:2:3:4",
            "49000-65535",
        ] {
            assert!(parse(s).is_err(), "{s:?} accepted");
        }
        let e = parse("80-70").unwrap_err().to_string();
        assert!(e.contains("reversed"), "{e}");
        let e = parse("[::1]:8080:80").unwrap_err().to_string();
        assert!(e.contains("route_localnet") && e.contains("[::]"), "{e}");
        let e = parse("fd00::1:8080:80").unwrap_err().to_string();
        assert!(e.contains("brackets"), "{e}");
        let e = parse("[fd00::zz]:8080:80").unwrap_err().to_string();
        assert!(e.contains("not an IPv6 address"), "{e}");
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    #[test]
    fn v6_specs() {
        let p = parse("[fd00::1]:8080-8081:80-81/udp").unwrap();
        assert_eq!(
            (p.host_ip, p.host_ports, p.container_ports, p.proto),
            (Some(v6("fd00::1")), Some((8080, 8081)), (80, 81), L4::Udp)
        );
        let p = parse("[::]:8080:80").unwrap();
        assert_eq!(p.host_ip, Some(v6("::")));
        assert_eq!(parse("[fd00::1]::80").unwrap().host_ports, None);
    }

    #[test]
    fn targets_and_changes_by_family() {
        let both = [v4("10.89.0.5"), v6("fd00:89::5")];
        // No host address: one Published per family, the same host port.
        let p = parse("8080:80").unwrap();
        let t = p.targets(&both, "8080:80").unwrap();
        let got = p.published(&[(8080, 80)], &t);
        assert_eq!(got.len(), 2);
        let changes: Vec<Change> = got.iter().map(|p| p.add_change().unwrap()).collect();
        assert_eq!(
            changes,
            vec![
                Change::AddForward4(Forward4 {
                    proto: L4::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    ip: "10.89.0.5".parse().unwrap(),
                    port: 80
                }),
                Change::AddForward6(Forward6 {
                    proto: L4::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    ip: "fd00:89::5".parse().unwrap(),
                    port: 80
                }),
            ]
        );
        assert_eq!(got[1].to_string(), "[::]:8080->80/tcp");
        // [::]: IPv6 only, into pub6 (no host address).
        let p = parse("[::]:8080:80").unwrap();
        let t = p.targets(&both, "x").unwrap();
        assert_eq!(t, vec![v6("fd00:89::5")]);
        let pubd = p.published(&[(8080, 80)], &t)[0];
        assert_eq!(
            pubd.expire_change().unwrap(),
            Change::ExpireForward6(Forward6 {
                proto: L4::Tcp,
                host_ip: None,
                host_port: 8080,
                ip: "fd00:89::5".parse().unwrap(),
                port: 80
            })
        );
        // A host address of one family forwards to that family's address only.
        let p = parse("192.0.2.1:8080:80").unwrap();
        assert_eq!(p.targets(&both, "x").unwrap(), vec![v4("10.89.0.5")]);
        let p = parse("[fd00::1]:8080:80").unwrap();
        let t = p.targets(&both, "x").unwrap();
        let f = p.published(&[(8080, 80)], &t)[0].add_change().unwrap();
        assert!(
            matches!(f, Change::AddForward6(Forward6 { host_ip: Some(h), .. }) if h == "fd00::1".parse::<Ipv6Addr>().unwrap())
        );
        // No address of that family: an error, not a panic.
        let e = p
            .targets(&[v4("10.89.0.5")], "[fd00::1]:8080:80")
            .unwrap_err();
        assert!(e.to_string().contains("no IPv6 address"), "{e}");
        let e = parse("192.0.2.1:80:80")
            .unwrap()
            .targets(&[v6("fd00::5")], "x")
            .unwrap_err();
        assert!(e.to_string().contains("no IPv4 address"), "{e}");
        let mixed = Published {
            protocol: L4::Tcp,
            host_ip: Some(v4("192.0.2.1")),
            host_port: 80,
            container_ip: v6("fd00::5"),
            container_port: 80,
        };
        assert!(mixed.add_change().is_err() && mixed.expire_change().is_err());
    }

    #[test]
    fn records_load() {
        // A record of before IPv6: the same strings.
        let old = r#"{"protocol":"tcp","host_ip":null,"host_port":8080,"container_ip":"10.89.0.5","container_port":80}"#;
        let p: Published = serde_json::from_str(old).unwrap();
        assert_eq!(p.container_ip, v4("10.89.0.5"));
        assert_eq!(serde_json::to_string(&p).unwrap(), old);
        let old = r#"{"protocol":"udp","host_ip":"192.0.2.1","host_port":53,"container_ip":"10.89.0.5","container_port":53}"#;
        let p: Published = serde_json::from_str(old).unwrap();
        assert_eq!(p.host_ip, Some(v4("192.0.2.1")));
        let new = r#"{"protocol":"tcp","host_ip":"fd00::1","host_port":8080,"container_ip":"fd00:89::5","container_port":80}"#;
        let p: Published = serde_json::from_str(new).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), new);
        // Mixed families are refused on load.
        let bad = r#"{"protocol":"tcp","host_ip":"192.0.2.1","host_port":8080,"container_ip":"fd00:89::5","container_port":80}"#;
        assert!(serde_json::from_str::<Published>(bad).is_err());
    }

    #[test]
    fn claims_by_family() {
        let base = std::env::temp_dir().join(format!("nethook-ports6-{}", std::process::id()));
        let dirs = Dirs::new(base.join("c"), base.join("r"));
        let claims = PortClaims::open(&dirs).unwrap();
        let a = ContainerId::new("a").unwrap();
        let b = ContainerId::new("b").unwrap();
        // A v4 claim of the old format (every address) holds v6 too.
        std::fs::create_dir_all(base.join("r/ports/tcp/8080")).unwrap();
        std::fs::write(base.join("r/ports/tcp/8080/0.0.0.0"), "a").unwrap();
        let e = claims
            .claim(&parse("[::]:8080:80").unwrap(), &b, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("published by a (0.0.0.0:8080/tcp)"), "{e}");
        assert!(claims
            .claim(&parse("[fd00::1]:8080:80").unwrap(), &b, "x")
            .is_err());
        // A dual-stack container: one claim, one file, for both of its forwards.
        let spec = parse("9090:80").unwrap();
        let both = [v4("10.89.0.5"), v6("fd00:89::5")];
        let pairs = claims.claim(&spec, &a, "9090:80").unwrap();
        let ports = spec.published(&pairs, &spec.targets(&both, "x").unwrap());
        assert_eq!(ports.len(), 2);
        let e = claims
            .claim(&parse("[::]:9090:80").unwrap(), &b, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("published by a"), "{e}");
        // [::] and specific IPv6 addresses overlap; IPv4 addresses do not.
        claims
            .claim(&parse("[::]:7070:80").unwrap(), &a, "x")
            .unwrap();
        let e = claims
            .claim(&parse("[fd00::1]:7070:80").unwrap(), &b, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("published by a ([::]:7070/tcp)"), "{e}");
        claims
            .claim(&parse("192.0.2.1:7070:80").unwrap(), &b, "x")
            .unwrap();
        assert!(claims.claim(&parse("7070:80").unwrap(), &b, "x").is_err());
        claims
            .claim(&parse("[fd00::1]:6060:80").unwrap(), &a, "x")
            .unwrap();
        claims
            .claim(&parse("[fd00::2]:6060:80").unwrap(), &b, "x")
            .unwrap();
        assert!(claims
            .claim(&parse("[fd00::1]:6060:80").unwrap(), &b, "x")
            .is_err());
        // Releasing both forwards of the dual-stack claim frees the port.
        for p in &ports {
            claims.release(p, &a).unwrap();
        }
        claims
            .claim(&parse("[::]:9090:80").unwrap(), &b, "x")
            .unwrap();
        std::fs::remove_dir_all(base).unwrap();
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
            container_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
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
