//! Network definitions: schema, validation, load and save (config dir, `networks/NAME.json`).

use crate::error::{Error, Result};
use crate::names::{fnv1a, IfName, Mac, NetworkName};
use crate::state::{self, Dirs};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

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
            "ipvlan" => {
                return Err(Error::invalid(
                    "driver \"ipvlan\"",
                    "is not supported (nethook has no ipvlan driver; this machine's kernel has no ipvlan module either: see 'nethook doctor')",
                    "use --driver macvlan for containers on the parent's segment",
                ))
            }
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

impl DriverKind {
    /// Drivers whose containers get an interface and addresses of their own.
    pub fn has_interfaces(self) -> bool {
        matches!(
            self,
            DriverKind::Bridge | DriverKind::Macvlan | DriverKind::Overlay
        )
    }
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriverKind::Bridge => "bridge",
            DriverKind::Macvlan => "macvlan",
            DriverKind::Overlay => "overlay",
            DriverKind::Host => "host",
            DriverKind::None => "none",
        })
    }
}

/// How a macvlan child talks to its siblings on the same parent (the kernel's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Siblings reach each other directly inside the parent (the default, as in Docker).
    Bridge,
    /// No traffic between siblings, not even through an outside switch.
    Private,
    /// Sibling traffic goes out to the switch (which must hairpin it).
    Vepa,
    /// One child owns the parent outright (its MAC too).
    Passthru,
}

impl std::str::FromStr for MacvlanMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "bridge" => MacvlanMode::Bridge,
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "passthru" => MacvlanMode::Passthru,
            _ => {
                return Err(Error::invalid(
                    format!("macvlan mode {s:?}"),
                    "is not a macvlan mode",
                    "use bridge, private, vepa or passthru",
                ))
            }
        })
    }
}

/// The IPv6 subnet of a dual-stack network and its gateway. A container's IPv6 address is
/// derived from its IPv4 lease (same offset into the subnet), so one lease holds both and
/// neither can leak without the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet6 {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
}

impl Subnet6 {
    /// The IPv6 address that goes with IPv4 lease `ip` of `v4`.
    pub fn address_for(&self, v4: &Ipv4Net, ip: Ipv4Addr) -> Ipv6Addr {
        let offset = u128::from(u32::from(ip) - u32::from(v4.network()));
        Ipv6Addr::from(u128::from(self.subnet.network()) + offset)
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
    /// Exactly one for bridge and macvlan networks, none for host and none.
    #[serde(default)]
    pub subnets: Vec<Subnet4>,
    /// At most one: the network is dual-stack when present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets6: Vec<Subnet6>,
    /// The bridge of a bridge network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    /// Fixed bridge MAC: without one the bridge takes its lowest port MAC, which changes when
    /// that container leaves and makes every other container's gateway ARP entry stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_mac: Option<Mac>,
    /// The host interface a macvlan network's containers hang off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<IfName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan_mode: Option<MacvlanMode>,
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
    /// Overlay networks: the cluster-wide settings (`subnets` holds this host's block once
    /// it has one, see `load`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayInfo>,
}

/// What every host of an overlay network shares: the cluster subnet, split into per-host
/// blocks of `/block_prefix`, and the VXLAN network identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInfo {
    pub subnet: Ipv4Net,
    pub vni: u32,
    pub block_prefix: u8,
}

/// Default size of a host's address block on an overlay network.
pub const DEFAULT_BLOCK_PREFIX: u8 = 24;

/// The VNI of an overlay network created without `--vni`: stable, from its name.
pub fn default_vni(name: &NetworkName) -> u32 {
    (fnv1a(&["vni", name.as_str()]) % 0xff_fffe) as u32 + 1
}

/// Where a host keeps the address block it holds on an overlay network (config dir: the
/// claim lives in etcd and outlives reboots).
pub fn overlay_block_file(dirs: &Dirs, name: &NetworkName) -> std::path::PathBuf {
    dirs.config.join("overlay").join(format!("{name}.block"))
}

/// This host's first block of overlay network `name` (its bridge's gateway and DNS are there),
/// if it holds one.
pub fn overlay_block(dirs: &Dirs, name: &NetworkName) -> Result<Option<Ipv4Net>> {
    Ok(overlay_blocks(dirs, name)?.into_iter().next())
}

/// Every block this host holds on overlay network `name`, in the order claimed: one a line.
pub fn overlay_blocks(dirs: &Dirs, name: &NetworkName) -> Result<Vec<Ipv4Net>> {
    let path = overlay_block_file(dirs, name);
    let Some(t) = state::read_optional(&path)? else {
        return Ok(Vec::new());
    };
    t.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse().map_err(|_| {
                Error::invalid(
                    format!("block file {}", path.display()),
                    format!("{l:?} is not a CIDR"),
                    "remove the file (the host's claims in etcd are found again)",
                )
            })
        })
        .collect()
}

impl Network {
    /// The host-local view of an overlay network: addresses come from this host's block, whose
    /// first address is the bridge's gateway; the rest of the cluster subnet is routed by the
    /// agent through the VXLAN device.
    pub fn with_block(mut self, block: Ipv4Net) -> Network {
        self.subnets = vec![Subnet4 {
            subnet: block,
            gateway: Ipv4Addr::from(u32::from(block.network()) + 1),
            ip_range: None,
        }];
        self
    }

    /// True for networks whose containers hang off a bridge of this host (bridge, overlay).
    pub fn bridged(&self) -> bool {
        self.driver.bridged()
    }
}

impl DriverKind {
    /// Bridge and overlay networks both give containers a veth on a local bridge.
    pub fn bridged(self) -> bool {
        matches!(self, DriverKind::Bridge | DriverKind::Overlay)
    }
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
    /// `--parent IF` of a macvlan network.
    pub parent: Option<String>,
    /// `--mode` of a macvlan network.
    pub macvlan_mode: Option<String>,
    pub labels: Vec<String>,
    pub opts: Vec<String>,
    /// Overlay: `--vni` (default derived from the name).
    pub vni: Option<u32>,
    /// Overlay: `--block-prefix` (default 24).
    pub block_prefix: Option<u8>,
}

/// Longest IPv6 prefix a network may have: /120 leaves 256 addresses, room for the IPv4
/// leases of a /24 (the IPv6 address is derived from the IPv4 one).
pub const MAX_PREFIX6: u8 = 120;
/// The smallest MTU IPv6 allows on a link (RFC 8200).
pub const MIN_MTU_IPV6: u32 = 1280;

pub fn parse_ipv6_net(s: &str) -> Result<Ipv6Net> {
    let net: Ipv6Net = s.parse().map_err(|_| {
        Error::invalid(
            format!("subnet {s:?}"),
            "is not an IPv6 CIDR",
            "write it like fd00:90::/64",
        )
    })?;
    if net.network() != net.addr() {
        return Err(Error::invalid(
            format!("subnet {s}"),
            format!("has host bits set (the network is {})", net.trunc()),
            format!("use {}", net.trunc()),
        ));
    }
    if net.prefix_len() > MAX_PREFIX6 {
        return Err(Error::invalid(
            format!("subnet {s}"),
            format!("is longer than /{MAX_PREFIX6}"),
            format!("use a prefix of /{MAX_PREFIX6} or shorter (/64 is usual)"),
        ));
    }
    let a = net.network();
    if a.is_multicast()
        || a.is_loopback()
        || a.is_unspecified()
        || (a.segments()[0] & 0xffc0) == 0xfe80
    {
        return Err(Error::invalid(
            format!("subnet {s}"),
            "is not a unicast global or unique-local prefix",
            "use a ULA prefix like fd00:90::/64 or one of your global prefixes",
        ));
    }
    Ok(net)
}

/// A stable ULA /64 for a network (RFC 4193 shape, the global ID from the network's name).
fn auto_subnet6(name: &NetworkName) -> Ipv6Net {
    let h = fnv1a(&["ula", name.as_str()]).to_be_bytes();
    let seg = |a: u8, b: u8| (u16::from(a) << 8) | u16::from(b);
    let addr = Ipv6Addr::new(
        0xfd00 | u16::from(h[0]),
        seg(h[1], h[2]),
        seg(h[3], h[4]),
        0,
        0,
        0,
        0,
        0,
    );
    Ipv6Net::new(addr, 64).expect("/64 is valid")
}

pub fn parse_ipv4_net(s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        if s.contains(':') {
            Error::invalid(
                format!("subnet {s:?}"),
                "is IPv6 where an IPv4 CIDR is needed",
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
        let refuse = |what: &str| {
            Err(Error::invalid(
                format!("network {name}"),
                format!("{what} has no meaning for driver {driver}"),
                format!("leave {what} out"),
            ))
        };
        if driver != DriverKind::Overlay {
            if self.vni.is_some() {
                return refuse("--vni");
            }
            if self.block_prefix.is_some() {
                return refuse("--block-prefix");
            }
        }
        match driver {
            DriverKind::Overlay => {
                for (given, what) in [
                    (self.parent.is_some(), "--parent"),
                    (self.macvlan_mode.is_some(), "--mode"),
                    (!self.gateways.is_empty(), "--gateway"),
                    (self.ip_range.is_some(), "--ip-range"),
                    (
                        self.ipv6 || self.subnets.iter().any(|s| s.contains(':')),
                        "IPv6",
                    ),
                ] {
                    if given {
                        return refuse(what);
                    }
                }
                if self.subnets.is_empty() {
                    return Err(Error::invalid(
                        format!("network {name}"),
                        "an overlay network needs its cluster subnet",
                        "give --subnet CIDR (e.g. 10.200.0.0/16)",
                    ));
                }
            }
            DriverKind::Host | DriverKind::None => {
                for (given, what) in [
                    (!self.subnets.is_empty(), "--subnet"),
                    (!self.gateways.is_empty(), "--gateway"),
                    (self.ip_range.is_some(), "--ip-range"),
                    (self.ipv6, "--ipv6"),
                    (self.internal, "--internal"),
                    (!self.dns_upstreams.is_empty(), "--dns-upstream"),
                    (self.bridge.is_some(), "--bridge"),
                    (self.parent.is_some(), "--parent"),
                    (self.macvlan_mode.is_some(), "--mode"),
                    (self.mtu.is_some(), "--mtu"),
                ] {
                    if given {
                        return refuse(what);
                    }
                }
                return Ok(Network {
                    name,
                    driver,
                    subnets: Vec::new(),
                    subnets6: Vec::new(),
                    bridge: None,
                    bridge_mac: None,
                    parent: None,
                    macvlan_mode: None,
                    internal: false,
                    dns: false,
                    dns_upstreams: Vec::new(),
                    masquerade: false,
                    isolate: false,
                    icc: true,
                    mtu: None,
                    labels: parse_kvs("label", &self.labels)?,
                    options: parse_kvs("option", &self.opts)?,
                    created: now(),
                    overlay: None,
                });
            }
            DriverKind::Macvlan => {
                if self.bridge.is_some() {
                    return refuse("--bridge");
                }
                if self.parent.is_none() {
                    return Err(Error::invalid(
                        format!("network {name}"),
                        "a macvlan network needs a parent interface",
                        "give --parent IF (the host interface on the containers' segment)",
                    ));
                }
                if self.subnets.iter().all(|s| s.contains(':')) {
                    return Err(Error::invalid(
                        format!("network {name}"),
                        "a macvlan network needs the IPv4 subnet of its segment",
                        "give --subnet CIDR (the parent's LAN, e.g. 192.168.1.0/24)",
                    ));
                }
            }
            DriverKind::Bridge => {
                if self.parent.is_some() {
                    return refuse("--parent");
                }
                if self.macvlan_mode.is_some() {
                    return refuse("--mode");
                }
            }
        }
        // Subnets: at most one per family; gateways go with the subnet of their family.
        let (mut sub4, mut sub6) = (None, None);
        for s in &self.subnets {
            if s.contains(':') {
                if sub6.replace(parse_ipv6_net(s)?).is_some() {
                    return Err(Error::invalid(
                        format!("network {name}"),
                        "more than one IPv6 --subnet",
                        "give one IPv6 subnet",
                    ));
                }
            } else if sub4.replace(parse_ipv4_net(s)?).is_some() {
                return Err(Error::invalid(
                    format!("network {name}"),
                    "more than one IPv4 --subnet",
                    "give one IPv4 subnet",
                ));
            }
        }
        let subnet = match sub4 {
            Some(s) => s,
            None => auto_subnet.ok_or_else(|| {
                Error::invalid(
                    format!("network {name}"),
                    "no --subnet given",
                    "give --subnet CIDR",
                )
            })?,
        };
        let ipv6 = self.ipv6 || sub6.is_some();
        let subnet6 = match (ipv6, sub6) {
            (_, Some(s)) => Some(s),
            (true, None) => Some(auto_subnet6(&name)),
            (false, None) => None,
        };
        let (mut gw4, mut gw6) = (None, None);
        for g in &self.gateways {
            if g.contains(':') {
                let ip: Ipv6Addr = g.parse().map_err(|_| {
                    Error::invalid(
                        format!("gateway {g:?}"),
                        "is not an IPv6 address",
                        "write it like fd00:90::1",
                    )
                })?;
                let Some(s6) = subnet6 else {
                    return Err(Error::invalid(
                        format!("gateway {ip}"),
                        "is IPv6 but the network has no IPv6 subnet",
                        "add --subnet for IPv6 or --ipv6, or drop the gateway",
                    ));
                };
                if !s6.contains(&ip) || ip == s6.network() {
                    return Err(Error::invalid(
                        format!("gateway {ip}"),
                        format!("is not a host address of {s6}"),
                        "pick an address inside the subnet",
                    ));
                }
                if gw6.replace(ip).is_some() {
                    return Err(Error::invalid(
                        format!("network {name}"),
                        "more than one IPv6 --gateway",
                        "give one gateway per subnet",
                    ));
                }
            } else {
                let ip = parse_ipv4("gateway", g)?;
                if !is_host_address(&subnet, ip) {
                    return Err(Error::invalid(
                        format!("gateway {ip}"),
                        format!("is not a host address of {subnet}"),
                        "pick an address inside the subnet",
                    ));
                }
                if gw4.replace(ip).is_some() {
                    return Err(Error::invalid(
                        format!("network {name}"),
                        "more than one IPv4 --gateway",
                        "give one gateway per subnet",
                    ));
                }
            }
        }
        let gateway = gw4.unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
        let subnets6 = match subnet6 {
            Some(s6) => {
                // The IPv6 address is the IPv4 lease's offset into the IPv6 subnet: every
                // offset of the IPv4 subnet must fit.
                let host_bits4 = 32 - u32::from(subnet.prefix_len());
                let host_bits6 = 128 - u32::from(s6.prefix_len());
                if host_bits6 < host_bits4 {
                    return Err(Error::invalid(
                        format!("subnet {s6}"),
                        format!("has fewer addresses than the IPv4 subnet {subnet}"),
                        format!(
                            "use an IPv6 prefix of /{} or shorter",
                            128 - host_bits4.min(128)
                        ),
                    ));
                }
                let gateway6 = gw6.unwrap_or_else(|| Ipv6Addr::from(u128::from(s6.network()) + 1));
                vec![Subnet6 {
                    subnet: s6,
                    gateway: gateway6,
                }]
            }
            None => Vec::new(),
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
        let (bridge, bridge_mac, parent, macvlan_mode) = match driver {
            DriverKind::Macvlan => {
                let parent = IfName::new(self.parent.as_deref().unwrap_or_default())?;
                let mode = match &self.macvlan_mode {
                    Some(m) => m.parse()?,
                    None => MacvlanMode::Bridge,
                };
                (None, None, Some(parent), Some(mode))
            }
            _ => {
                let bridge = match &self.bridge {
                    Some(b) => IfName::new(b)?,
                    None if name.as_str() == DEFAULT_NETWORK => IfName::new(DEFAULT_BRIDGE)?,
                    None => default_bridge(&name),
                };
                (Some(bridge), Some(bridge_mac(&name)), None, None)
            }
        };
        let labels = parse_kvs("label", &self.labels)?;
        let options = parse_kvs("option", &self.opts)?;
        let tuning = crate::tuning::Tuning::from_options(&options)?;
        if tuning.mtu.is_some() && self.mtu.is_some() && tuning.mtu != self.mtu {
            return Err(Error::invalid(
                format!("network {name}"),
                "--mtu and -o mtu= disagree",
                "give the MTU once",
            ));
        }
        let mtu = self.mtu.or(tuning.mtu);
        if let Some(m) = mtu.filter(|m| !subnets6.is_empty() && *m < MIN_MTU_IPV6) {
            return Err(Error::invalid(
                format!("mtu {m}"),
                format!("is below {MIN_MTU_IPV6}, the least IPv6 works with"),
                format!("give an MTU of {MIN_MTU_IPV6} or more, or leave out IPv6"),
            ));
        }
        if tuning.ingress.is_some() && driver == DriverKind::Macvlan {
            return Err(Error::invalid(
                format!("network {name}"),
                "bandwidth.ingress on a macvlan network would need an ifb device, which nethook does not make",
                "limit egress only, or use a bridge network",
            ));
        }
        if let Some(s) = options.get(OPT_ALLOW_HOST_PORTS) {
            parse_host_ports(s)?;
        }
        match options.get(OPT_DNS_LISTEN).map(String::as_str) {
            None | Some("container") => {}
            Some("gateway") if driver.bridged() => {}
            Some(other) => return Err(Error::invalid(
                format!("option {OPT_DNS_LISTEN}={other}"),
                if driver == DriverKind::Macvlan {
                    "a macvlan network's DNS can only listen in the container (its host is unreachable from it)"
                } else {
                    "is not gateway or container"
                },
                "use dns_listen=gateway (the default for bridge networks) or dns_listen=container",
            )),
        }
        let dns_upstreams = parse_dns_upstreams(&name, gateway, &self.dns_upstreams)?;
        // A macvlan network's traffic never passes the host's stack: nothing to masquerade.
        let masquerade = driver.bridged() && !self.no_masquerade && !self.internal;
        let overlay = if driver == DriverKind::Overlay {
            let block_prefix = self.block_prefix.unwrap_or(DEFAULT_BLOCK_PREFIX);
            if block_prefix <= subnet.prefix_len() || block_prefix > 29 {
                return Err(Error::invalid(
                    format!("block prefix /{block_prefix}"),
                    format!(
                        "must be longer than the subnet's /{} and at most /29",
                        subnet.prefix_len()
                    ),
                    "give --block-prefix 24 (256 addresses a host) or 26",
                ));
            }
            let vni = self.vni.unwrap_or_else(|| default_vni(&name));
            if !(1..=0xff_ffff).contains(&vni) {
                return Err(Error::invalid(
                    format!("vni {vni}"),
                    "is outside 1-16777215",
                    "give a 24-bit --vni",
                ));
            }
            Some(OverlayInfo {
                subnet,
                vni,
                block_prefix,
            })
        } else {
            None
        };
        Ok(Network {
            overlay,
            bridge_mac,
            name,
            driver,
            subnets: vec![Subnet4 {
                subnet,
                gateway,
                ip_range,
            }],
            subnets6,
            bridge,
            parent,
            macvlan_mode,
            internal: self.internal,
            dns: !self.no_dns,
            dns_upstreams,
            masquerade,
            isolate: self.isolate.unwrap_or(true),
            icc: self.icc.unwrap_or(true),
            mtu,
            labels,
            options,
            created: now(),
        })
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_kvs(what: &str, raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in raw {
        let (k, v) = parse_kv(what, l)?;
        out.insert(k, v);
    }
    Ok(out)
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

/// Where a network's DNS answers: `gateway` (bridge default) or `container` (127.0.0.11 in
/// each container's namespace; the only way for macvlan).
pub const OPT_DNS_LISTEN: &str = "dns_listen";

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

    /// The IPv4 subnet. Only for drivers with interfaces (`driver.has_interfaces()`):
    /// validation guarantees exactly one there, and a hand-edited file without one is refused
    /// at load time.
    pub fn subnet4(&self) -> &Subnet4 {
        &self.subnets[0]
    }

    /// The IPv6 subnet of a dual-stack network.
    pub fn subnet6(&self) -> Option<&Subnet6> {
        self.subnets6.first()
    }

    /// The bridge's name. Only for bridge networks (guaranteed at build and load time).
    pub fn bridge_name(&self) -> &IfName {
        self.bridge.as_ref().expect("bridge networks have a bridge")
    }

    /// The built-in networks `host` and `none`, usable without `network create` (as in
    /// Docker); a file of the same name takes precedence.
    pub fn builtin(name: &NetworkName) -> Option<Network> {
        let driver = match name.as_str() {
            "host" => "host",
            "none" => "none",
            _ => return None,
        };
        NetworkSpec {
            name: name.to_string(),
            driver: Some(driver.into()),
            ..Default::default()
        }
        .build(None)
        .ok()
    }

    fn check_loaded(self, file: &std::path::Path) -> Result<Self> {
        let bad = |why: &str| {
            Err(Error::invalid(
                format!("network file {}", file.display()),
                why.to_string(),
                "fix or remove the file",
            ))
        };
        if self.driver.has_interfaces() && self.subnets.len() != 1 {
            return bad("must have exactly one IPv4 subnet");
        }
        if self.subnets6.len() > 1 {
            return bad("has more than one IPv6 subnet");
        }
        match self.driver {
            DriverKind::Bridge if self.bridge.is_none() || self.bridge_mac.is_none() => {
                bad("is a bridge network without a bridge name and MAC")
            }
            DriverKind::Macvlan if self.parent.is_none() => {
                bad("is a macvlan network without a parent")
            }
            DriverKind::Overlay
                if self.bridge.is_none() || self.bridge_mac.is_none() || self.overlay.is_none() =>
            {
                bad("is an overlay network without a bridge, bridge MAC or overlay settings")
            }
            _ => Ok(self),
        }
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
        if new.bridge.is_some() && other.bridge == new.bridge {
            return Err(Error::invalid(
                format!("bridge {}", new.bridge_name()),
                format!("is already used by network {}", other.name),
                "give another --bridge",
            ));
        }
        if let Some(p) = &new.parent {
            if other.bridge.as_ref() == Some(p) {
                return Err(Error::invalid(
                    format!("parent {p}"),
                    format!("is the bridge of network {}", other.name),
                    "give the host interface of the containers' segment as --parent",
                ));
            }
        }
        if let Some(b) = &new.bridge {
            if other.parent.as_ref() == Some(b) {
                return Err(Error::invalid(
                    format!("bridge {b}"),
                    format!("is the macvlan parent of network {}", other.name),
                    "give another --bridge",
                ));
            }
        }
        for a in &new.subnets6 {
            for b in &other.subnets6 {
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
        return Ok(Network::builtin(name));
    };
    let net: Network = serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            format!("network file {}", path.display()),
            e.to_string(),
            "fix or remove the file",
        )
    })?;
    let net = net.check_loaded(&path)?;
    if net.driver == DriverKind::Overlay {
        if let Some(block) = overlay_block(dirs, name)? {
            return Ok(Some(net.with_block(block)));
        }
    }
    Ok(Some(net))
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
        assert_eq!(n.bridge_name().as_str(), "nh-web");
        assert!(n.masquerade && n.dns && !n.internal);
        let d = spec("nethook", "10.89.0.0/16").build(None).unwrap();
        assert_eq!(d.bridge_name().as_str(), "nethook0");
        let long = spec("a-very-long-network-name", "10.91.0.0/24")
            .build(None)
            .unwrap();
        assert!(long.bridge_name().as_str().len() <= 15);
    }

    #[test]
    fn bad_input_is_refused() {
        for (name, subnet) in [
            ("web", "10.90.3.0"),
            ("web", "10.90.3.1/24"),
            ("web", "10.90.3.0/31"),
            ("web", "300.1.1.0/24"),
            ("web", "fd00::1/64"),
            ("web", "fd00::/121"),
            ("web", "fe80::/64"),
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

    #[test]
    fn dual_stack() {
        let mut s = spec("v6", "10.90.6.0/24");
        s.subnets.push("fd00:90:6::/64".into());
        let n = s.build(None).unwrap();
        let s6 = n.subnet6().unwrap();
        assert_eq!(s6.gateway, "fd00:90:6::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            s6.address_for(&n.subnet4().subnet, "10.90.6.7".parse().unwrap()),
            "fd00:90:6::7".parse::<Ipv6Addr>().unwrap()
        );
        // --ipv6 alone: a ULA /64 of the network's own.
        let mut s = spec("v6b", "10.90.7.0/24");
        s.ipv6 = true;
        let n = s.build(None).unwrap();
        let s6 = n.subnet6().unwrap();
        assert_eq!(s6.subnet.prefix_len(), 64);
        assert_eq!(s6.subnet.network().segments()[0] & 0xff00, 0xfd00);
        // A v6 gateway goes with the v6 subnet.
        let mut s = spec("v6c", "10.90.8.0/24");
        s.subnets.push("fd00:8::/64".into());
        s.gateways = vec!["fd00:8::fe".into(), "10.90.8.254".into()];
        let n = s.build(None).unwrap();
        assert_eq!(n.subnet6().unwrap().gateway.to_string(), "fd00:8::fe");
        assert_eq!(n.subnet4().gateway.to_string(), "10.90.8.254");
        // Bad: a v6 subnet smaller than the v4 one, an MTU IPv6 cannot use, a v6 gateway
        // outside, two v6 subnets.
        let mut s = spec("v6d", "10.90.0.0/16");
        s.subnets.push("fd00:9::/120".into());
        assert!(s.build(None).is_err());
        let mut s = spec("v6e", "10.90.9.0/24");
        s.ipv6 = true;
        s.mtu = Some(1279);
        assert!(s.build(None).is_err());
        s.mtu = Some(1280);
        assert!(s.build(None).is_ok());
        let mut s = spec("v6f", "10.90.9.0/24");
        s.subnets.push("fd00:9::/64".into());
        s.gateways = vec!["fd00:a::1".into()];
        assert!(s.build(None).is_err());
        let mut s = spec("v6g", "10.90.9.0/24");
        s.subnets.push("fd00:9::/64".into());
        s.subnets.push("fd00:a::/64".into());
        assert!(s.build(None).is_err());
    }

    #[test]
    fn drivers() {
        let mut s = spec("mv", "192.168.50.0/24");
        s.driver = Some("macvlan".into());
        assert!(s.build(None).is_err(), "macvlan without a parent");
        s.parent = Some("eth9".into());
        let n = s.build(None).unwrap();
        assert_eq!(n.bridge, None);
        assert_eq!(n.macvlan_mode, Some(MacvlanMode::Bridge));
        assert!(!n.masquerade);
        s.macvlan_mode = Some("vepa".into());
        assert_eq!(s.build(None).unwrap().macvlan_mode, Some(MacvlanMode::Vepa));
        s.macvlan_mode = Some("l2".into());
        assert!(s.build(None).is_err());
        s.macvlan_mode = None;
        s.parent = Some("a-name-that-is-too-long".into());
        assert!(s.build(None).is_err());
        // A macvlan parent that is another network's bridge.
        let mut s = spec("mv2", "192.168.51.0/24");
        s.driver = Some("macvlan".into());
        s.parent = Some("nh-web".into());
        let mv = s.build(None).unwrap();
        let web = spec("web", "10.90.3.0/24").build(None).unwrap();
        assert!(check_conflicts(&mv, &[web]).is_err());
        // host and none take no addressing options.
        for d in ["host", "none"] {
            let ok = NetworkSpec {
                name: format!("my{d}"),
                driver: Some(d.into()),
                ..Default::default()
            };
            let n = ok.build(None).unwrap();
            assert!(n.subnets.is_empty() && !n.dns);
            let mut bad = ok.clone();
            bad.subnets = vec!["10.1.0.0/24".into()];
            assert!(bad.build(None).is_err());
        }
        let mut s = spec("ov", "10.99.0.0/16");
        s.driver = Some("overlay".into());
        let ov = s.build(None).unwrap();
        let info = ov.overlay.clone().unwrap();
        assert_eq!((info.block_prefix, info.vni), (24, default_vni(&ov.name)));
        assert!(ov.bridge.is_some() && ov.masquerade);
        let local = ov.with_block("10.99.7.0/24".parse().unwrap());
        assert_eq!(local.subnet4().gateway, Ipv4Addr::new(10, 99, 7, 1));
        s.block_prefix = Some(16);
        assert!(s.build(None).is_err(), "block as large as the subnet");
        s.block_prefix = None;
        s.ipv6 = true;
        assert!(s.build(None).is_err(), "IPv6 overlay");
        let mut s = spec("br", "10.99.0.0/24");
        s.parent = Some("eth0".into());
        assert!(s.build(None).is_err(), "--parent on a bridge network");
        assert!(Network::builtin(&NetworkName::new("host").unwrap()).is_some());
        assert!(Network::builtin(&NetworkName::new("web").unwrap()).is_none());
    }

    #[test]
    fn v6_overlap_is_refused() {
        let mut a = spec("a6", "10.90.1.0/24");
        a.subnets.push("fd00:1::/48".into());
        let a = a.build(None).unwrap();
        let mut b = spec("b6", "10.90.2.0/24");
        b.subnets.push("fd00:1:0:5::/64".into());
        let b = b.build(None).unwrap();
        assert!(check_conflicts(&b, &[a]).is_err());
    }

    #[test]
    fn old_network_files_still_load() {
        let old = r#"{"name":"web","driver":"bridge","subnets":[{"subnet":"10.90.3.0/24","gateway":"10.90.3.1"}],"bridge":"nh-web","bridge_mac":"02:6e:01:02:03:04","created":1}"#;
        let n: Network = serde_json::from_str(old).unwrap();
        let n = n.check_loaded(std::path::Path::new("x")).unwrap();
        assert_eq!(n.bridge_name().as_str(), "nh-web");
        assert!(n.subnets6.is_empty());
    }
}
