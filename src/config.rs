//! Network definitions: schema, validation, load and save (config dir, `networks/NAME.json`).

use crate::error::{Error, Result};
use crate::names::{fnv1a, IfName, Mac, NetworkName};
use crate::state::{self, Dirs};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The name of the network used when a container names none.
pub const DEFAULT_NETWORK: &str = "nethook";
/// Its bridge.
pub const DEFAULT_BRIDGE: &str = "nethook0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Bridge,
    Macvlan,
    Overlay,
    Host,
    None,
}

impl std::str::FromStr for DriverKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "bridge" => DriverKind::Bridge,
            "macvlan" => DriverKind::Macvlan,
            "overlay" => DriverKind::Overlay,
            "host" => DriverKind::Host,
            "none" => DriverKind::None,
            _ => {
                return Err(Error::invalid(
                    format!("driver {s:?}"),
                    "is not a known driver",
                    "use bridge, macvlan, overlay, host or none",
                ))
            }
        })
    }
}

/// One IPv4 subnet of a network and its gateway (the bridge's address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet4 {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Addresses are allocated only from this range when set (it lies inside `subnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
}

/// A network definition as stored in `networks/NAME.json` and printed by `network inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: NetworkName,
    pub driver: DriverKind,
    pub subnets: Vec<Subnet4>,
    pub bridge: IfName,
    /// Fixed bridge MAC: without one the bridge takes its lowest port MAC, which changes when
    /// that container leaves and makes every other container's gateway ARP entry stale.
    pub bridge_mac: Mac,
    #[serde(default)]
    pub internal: bool,
    #[serde(default = "yes")]
    pub dns: bool,
    /// DNS: where the daemon forwards names it does not own (`--dns-upstream`, at most 3);
    /// empty: the host's resolv.conf servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstreams: Vec<Ipv4Addr>,
    #[serde(default = "yes")]
    pub masquerade: bool,
    #[serde(default = "yes")]
    pub isolate: bool,
    #[serde(default = "yes")]
    pub icc: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created: u64,
}

fn yes() -> bool {
    true
}

/// What `network create` was asked for, before defaults are filled in.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: Option<String>,
    pub subnets: Vec<String>,
    pub gateways: Vec<String>,
    pub ip_range: Option<String>,
    pub ipv6: bool,
    pub internal: bool,
    pub no_dns: bool,
    /// `--dns-upstream IP`, repeatable.
    pub dns_upstreams: Vec<String>,
    pub no_masquerade: bool,
    pub isolate: Option<bool>,
    pub icc: Option<bool>,
    pub mtu: Option<u32>,
    pub bridge: Option<String>,
    pub labels: Vec<String>,
    pub opts: Vec<String>,
}

pub fn parse_ipv4_net(s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        if s.contains(':') {
            Error::invalid(
                format!("subnet {s:?}"),
                "IPv6 subnets are not supported yet",
                "use an IPv4 CIDR like 10.90.3.0/24",
            )
        } else {
            Error::invalid(
                format!("subnet {s:?}"),
                "is not a CIDR",
                "write it like 10.90.3.0/24",
            )
        }
    })?;
    if net.network() != net.addr() {
        return Err(Error::invalid(
            format!("subnet {s}"),
            format!("has host bits set (the network is {})", net.trunc()),
            format!("use {}", net.trunc()),
        ));
    }
    if net.prefix_len() > 30 {
        return Err(Error::invalid(
            format!("subnet {s}"),
            "leaves no room for a gateway and a container",
            "use a prefix of /30 or shorter",
        ));
    }
    Ok(net)
}

pub fn parse_ipv4(what: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| {
        Error::invalid(
            format!("{what} {s:?}"),
            "is not an IPv4 address",
            "write it like 10.90.3.7",
        )
    })
}

/// True when `ip` can be given to a host in `net`: not the network or broadcast address.
pub fn is_host_address(net: &Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast()
}

fn parse_kv(what: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::invalid(
            format!("{what} {s:?}"),
            "is not KEY=VALUE",
            "write it like key=value",
        )),
    }
}

/// The default bridge name for a network: `nh-NAME` when it fits, else a hash.
fn default_bridge(name: &NetworkName) -> IfName {
    let candidate = format!("nh-{name}");
    match IfName::new(&candidate) {
        Ok(n) => n,
        Err(_) => IfName::new(&format!(
            "nh-{:010x}",
            fnv1a(&[name.as_str()]) & 0xff_ffff_ffff
        ))
        .expect("13 bytes fit"),
    }
}

/// A stable locally administered MAC for a bridge, from its network's name.
fn bridge_mac(name: &NetworkName) -> Mac {
    let h = fnv1a(&["bridge-mac", name.as_str()]).to_be_bytes();
    Mac([0x02, 0x6e, h[0], h[1], h[2], h[3]])
}

impl NetworkSpec {
    /// Validate and fill in defaults. `subnet` comes from the caller when none was given
    /// (auto-chosen so it does not overlap the host or other networks).
    pub fn build(&self, auto_subnet: Option<Ipv4Net>) -> Result<Network> {
        let name = NetworkName::new(&self.name)?;
        let driver: DriverKind = self.driver.as_deref().unwrap_or("bridge").parse()?;
        if driver != DriverKind::Bridge {
            return Err(Error::invalid(
                format!("network {name}"),
                format!("driver {driver:?} is not implemented yet; only bridge is"),
                "create a bridge network",
            ));
        }
        if self.ipv6 {
            return Err(Error::invalid(
                format!("network {name}"),
                "IPv6 is not implemented yet",
                "leave out --ipv6",
            ));
        }
        if self.subnets.len() > 1 {
            return Err(Error::invalid(
                format!("network {name}"),
                "more than one subnet is not supported yet",
                "give one --subnet",
            ));
        }
        if self.gateways.len() > self.subnets.len().max(1) {
            return Err(Error::invalid(
                format!("network {name}"),
                "more --gateway than --subnet",
                "give one gateway per subnet",
            ));
        }
        let subnet = match self.subnets.first() {
            Some(s) => parse_ipv4_net(s)?,
            None => auto_subnet.ok_or_else(|| {
                Error::invalid(
                    format!("network {name}"),
                    "no --subnet given",
                    "give --subnet CIDR",
                )
            })?,
        };
        let gateway = match self.gateways.first() {
            Some(g) => {
                let g = parse_ipv4("gateway", g)?;
                if !is_host_address(&subnet, g) {
                    return Err(Error::invalid(
                        format!("gateway {g}"),
                        format!("is not a host address of {subnet}"),
                        "pick an address inside the subnet",
                    ));
                }
                g
            }
            None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
        };
        let ip_range = match &self.ip_range {
            Some(r) => {
                let r = parse_ipv4_net(r)?;
                if !subnet.contains(&r) {
                    return Err(Error::invalid(
                        format!("ip range {r}"),
                        format!("is not inside {subnet}"),
                        "give a range inside the subnet",
                    ));
                }
                Some(r)
            }
            None => None,
        };
        if let Some(m) = self.mtu {
            if !(68..=65535).contains(&m) {
                return Err(Error::invalid(
                    format!("mtu {m}"),
                    "is outside 68-65535",
                    "give a valid MTU",
                ));
            }
        }
        let bridge = match &self.bridge {
            Some(b) => IfName::new(b)?,
            None if name.as_str() == DEFAULT_NETWORK => IfName::new(DEFAULT_BRIDGE)?,
            None => default_bridge(&name),
        };
        let mut labels = BTreeMap::new();
        for l in &self.labels {
            let (k, v) = parse_kv("label", l)?;
            labels.insert(k, v);
        }
        let mut options = BTreeMap::new();
        for o in &self.opts {
            let (k, v) = parse_kv("option", o)?;
            options.insert(k, v);
        }
        if let Some(s) = options.get(OPT_ALLOW_HOST_PORTS) {
            parse_host_ports(s)?;
        }
        let dns_upstreams = parse_dns_upstreams(&name, gateway, &self.dns_upstreams)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Network {
            bridge_mac: bridge_mac(&name),
            name,
            driver,
            subnets: vec![Subnet4 {
                subnet,
                gateway,
                ip_range,
            }],
            bridge,
            internal: self.internal,
            dns: !self.no_dns,
            dns_upstreams,
            masquerade: !self.no_masquerade && !self.internal,
            isolate: self.isolate.unwrap_or(true),
            icc: self.icc.unwrap_or(true),
            mtu: self.mtu,
            labels,
            options,
            created,
        })
    }
}

/// At most this many upstream resolvers per network (what resolv.conf and the peers allow).
pub const MAX_DNS_UPSTREAMS: usize = 3;

/// `--dns-upstream` values: unicast IPv4 addresses, at most 3, never the network's own gateway
/// (nethook's DNS listens there: forwarding to it would loop).
fn parse_dns_upstreams(
    name: &NetworkName,
    gateway: Ipv4Addr,
    raw: &[String],
) -> Result<Vec<Ipv4Addr>> {
    if raw.len() > MAX_DNS_UPSTREAMS {
        return Err(Error::invalid(
            format!("network {name}"),
            format!("{} --dns-upstream given", raw.len()),
            format!("give at most {MAX_DNS_UPSTREAMS}"),
        ));
    }
    let mut out = Vec::new();
    for r in raw {
        let ip = parse_ipv4("dns upstream", r)?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(Error::invalid(
                format!("dns upstream {ip}"),
                "is not a unicast address",
                "give the address of a name server",
            ));
        }
        if ip == gateway {
            return Err(Error::invalid(
                format!("dns upstream {ip}"),
                "is the network's own gateway, where nethook's DNS answers: forwarding there would loop",
                "give the address of another name server",
            ));
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// Parse `allow_host_ports`: a comma list of `PORT[/tcp|udp|sctp]` (tcp by default).
pub fn parse_host_ports(s: &str) -> Result<Vec<(crate::firewall::L4, u16)>> {
    use crate::firewall::L4;
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (port, proto) = match part.split_once('/') {
            Some((p, "tcp")) => (p, L4::Tcp),
            Some((p, "udp")) => (p, L4::Udp),
            Some((p, "sctp")) => (p, L4::Sctp),
            Some((_, other)) => {
                return Err(Error::invalid(
                    format!("allow_host_ports {s:?}"),
                    format!("unknown protocol {other:?}"),
                    "use tcp, udp or sctp",
                ))
            }
            None => (part, L4::Tcp),
        };
        let n: u16 = port.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::invalid(
                format!("allow_host_ports {s:?}"),
                format!("{port:?} is not a port"),
                "write it like 22,8080/udp",
            )
        })?;
        out.push((proto, n));
    }
    Ok(out)
}

/// The option naming host services containers of a network may reach on the bridge address.
pub const OPT_ALLOW_HOST_PORTS: &str = "allow_host_ports";

impl Network {
    /// Host services a container may reach on its gateway: DNS when on, plus the admin's list.
    /// DNS is the daemon's port: the container asks port 53, and the prerouting redirect hands
    /// the input chain port `dns::LISTEN_PORT` (see the firewall module's docs).
    pub fn host_ports(&self) -> Vec<(crate::firewall::L4, u16)> {
        use crate::firewall::L4;
        let mut v = Vec::new();
        if self.dns {
            v.push((L4::Udp, crate::dns::LISTEN_PORT));
            v.push((L4::Tcp, crate::dns::LISTEN_PORT));
        }
        if let Some(s) = self.options.get(OPT_ALLOW_HOST_PORTS) {
            // Validated at create time.
            v.extend(parse_host_ports(s).unwrap_or_default());
        }
        v
    }

    pub fn subnet4(&self) -> &Subnet4 {
        // Validation guarantees exactly one subnet; a hand-edited file without one is refused
        // at load time.
        &self.subnets[0]
    }

    fn check_loaded(self, file: &std::path::Path) -> Result<Self> {
        if self.subnets.is_empty() {
            return Err(Error::invalid(
                format!("network file {}", file.display()),
                "has no subnets",
                "fix or remove the file",
            ));
        }
        Ok(self)
    }
}

/// Refuse a new network that clashes with an existing one (subnet overlap, same bridge).
pub fn check_conflicts(new: &Network, existing: &[Network]) -> Result<()> {
    for other in existing {
        if other.name == new.name {
            return Err(Error::invalid(
                format!("network {}", new.name),
                "already exists",
                "choose another name or remove it first",
            ));
        }
        if other.bridge == new.bridge {
            return Err(Error::invalid(
                format!("bridge {}", new.bridge),
                format!("is already used by network {}", other.name),
                "give another --bridge",
            ));
        }
        for a in &new.subnets {
            for b in &other.subnets {
                if a.subnet.contains(&b.subnet.network()) || b.subnet.contains(&a.subnet.network())
                {
                    return Err(Error::invalid(
                        format!("subnet {}", a.subnet),
                        format!("overlaps {} of network {}", b.subnet, other.name),
                        "choose a subnet that does not overlap",
                    ));
                }
            }
        }
    }
    Ok(())
}

pub fn load(dirs: &Dirs, name: &NetworkName) -> Result<Option<Network>> {
    let path = dirs.network_file(name);
    let Some(text) = state::read_optional(&path)? else {
        return Ok(None);
    };
    let net: Network = serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            format!("network file {}", path.display()),
            e.to_string(),
            "fix or remove the file",
        )
    })?;
    net.check_loaded(&path).map(Some)
}

/// Load a network that must exist.
pub fn load_existing(dirs: &Dirs, name: &NetworkName) -> Result<Network> {
    load(dirs, name)?.ok_or_else(|| {
        Error::invalid(
            format!("network {name}"),
            "does not exist",
            "create it with 'nethook network create' or check 'nethook network ls'",
        )
    })
}

pub fn list(dirs: &Dirs) -> Result<Vec<Network>> {
    let dir = dirs.networks_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::io(
                format!("reading {}", dir.display()),
                e,
                "check permissions",
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(stem) = file.strip_suffix(".json") else {
            continue;
        };
        let Ok(name) = NetworkName::new(stem) else {
            continue;
        };
        if let Some(n) = load(dirs, &name)? {
            out.push(n);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn save(dirs: &Dirs, net: &Network) -> Result<()> {
    state::ensure_dir(&dirs.networks_dir())?;
    let mut json = serde_json::to_vec_pretty(net).expect("network serialises");
    json.push(b'\n');
    state::atomic_write(&dirs.network_file(&net.name), &json, true)
}

pub fn remove(dirs: &Dirs, name: &NetworkName) -> Result<()> {
    state::remove_file(&dirs.network_file(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnets: vec![subnet.into()],
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let n = spec("web", "10.90.3.0/24").build(None).unwrap();
        assert_eq!(
            n.subnet4().gateway,
            "10.90.3.1".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(n.bridge.as_str(), "nh-web");
        assert!(n.masquerade && n.dns && !n.internal);
        let d = spec("nethook", "10.89.0.0/16").build(None).unwrap();
        assert_eq!(d.bridge.as_str(), "nethook0");
        let long = spec("a-very-long-network-name", "10.91.0.0/24")
            .build(None)
            .unwrap();
        assert!(long.bridge.as_str().len() <= 15);
    }

    #[test]
    fn bad_input_is_refused() {
        for (name, subnet) in [
            ("web", "10.90.3.0"),
            ("web", "10.90.3.1/24"),
            ("web", "10.90.3.0/31"),
            ("web", "300.1.1.0/24"),
            ("web", "fd00::/64"),
            ("we/b", "10.90.3.0/24"),
            ("..", "10.90.3.0/24"),
        ] {
            assert!(
                spec(name, subnet).build(None).is_err(),
                "{name} {subnet} accepted"
            );
        }
        let mut s = spec("web", "10.90.3.0/24");
        s.gateways = vec!["10.90.4.1".into()];
        assert!(s.build(None).is_err());
        s.gateways = vec!["10.90.3.255".into()];
        assert!(s.build(None).is_err());
        let mut s = spec("web", "10.90.3.0/24");
        s.ip_range = Some("10.90.4.0/25".into());
        assert!(s.build(None).is_err());
    }

    #[test]
    fn internal_never_masquerades() {
        let mut s = spec("int", "10.90.5.0/24");
        s.internal = true;
        assert!(!s.build(None).unwrap().masquerade);
    }

    #[test]
    fn conflicts() {
        let a = spec("a", "10.90.0.0/16").build(None).unwrap();
        let b = spec("b", "10.90.3.0/24").build(None).unwrap();
        assert!(check_conflicts(&b, std::slice::from_ref(&a)).is_err());
        let c = spec("c", "10.91.0.0/24").build(None).unwrap();
        assert!(check_conflicts(&c, std::slice::from_ref(&a)).is_ok());
        let a2 = spec("a", "10.92.0.0/24").build(None).unwrap();
        assert!(check_conflicts(&a2, &[a]).is_err());
    }

    #[test]
    fn round_trip() {
        let n = spec("web", "10.90.3.0/24").build(None).unwrap();
        let s = serde_json::to_string(&n).unwrap();
        let back: Network = serde_json::from_str(&s).unwrap();
        assert_eq!(n, back);
    }
}
