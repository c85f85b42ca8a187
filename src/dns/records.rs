//! The names the daemon answers, built from the run dir's endpoint records and the config dir's
//! network definitions (nothing else is stored: the records are the truth, written by attach and
//! detach under their locks).
//!
//! A container is visible under its hostname and each alias, bare and as `NAME.NETWORK`, on every
//! network of its own that has DNS on, and only to containers that share such a network: the
//! requester is known by its source address (addresses are unique across nethook's networks,
//! whose subnets never overlap), the network by the gateway the query arrived on. A query on an
//! in-container listener (127.0.0.11:53 inside one endpoint's namespace, see the module doc of
//! `dns`) needs neither: the socket itself names the endpoint ([`Records::endpoint_asker`]).
//!
//! On a dual-stack network a container also has an IPv6 address, kept beside the IPv4 one of
//! the same attachment and seen under the same rules: AAAA ([`Records::lookup6`]) and `ip6.arpa`
//! PTR ([`Records::reverse6`]). Every attachment has IPv4, so a name exists exactly when it has
//! A records; one without IPv6 answers AAAA with no records (NODATA), never NXDOMAIN.

use crate::config::Network;
use crate::state::endpoint::{Endpoint, EpState, NetnsId};
use crate::state::Dirs;
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One DNS-enabled network that has at least one ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub name: String,
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub internal: bool,
    pub upstreams: Vec<Ipv4Addr>,
    /// Served by listeners inside its containers' namespaces, not on the gateway
    /// ([`super::listens_in_container`]).
    pub in_container: bool,
}

/// One endpoint that gets a listener inside its namespace: it has an attachment on a network
/// that listens in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InContainer {
    pub key: EndpointKey,
    /// The namespace path as recorded (`/proc/PID/ns/net`, `/run/netns/NAME`).
    pub netns: PathBuf,
}

/// Which endpoint a listener inside a namespace belongs to: its id and the identity of its
/// namespace at attach time (None for a record without one: never entered).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub id: String,
    pub netns_id: Option<NetnsId>,
}

/// One container as DNS sees it.
#[derive(Debug, Clone)]
struct Ctr {
    /// Hostname as written (PTR answers with it).
    hostname: String,
    /// (net index, address) on every DNS-enabled network of the container.
    addrs: Vec<(usize, Ipv4Addr)>,
    /// (net index, IPv6 address) on those of them that are dual-stack.
    addrs6: Vec<(usize, Ipv6Addr)>,
    /// Host-side veths of those attachments: they vanish with the container's namespace.
    host_ifs: Vec<String>,
    key: EndpointKey,
    netns: PathBuf,
    /// On some network that listens in the container.
    in_container: bool,
}

/// An immutable snapshot, swapped whole on reload.
#[derive(Debug, Default)]
pub struct Records {
    nets: Vec<Net>,
    by_gateway: HashMap<Ipv4Addr, usize>,
    ctrs: Vec<Ctr>,
    /// Lower-case name (hostname or alias) -> (container, net, address, IPv6 address on a
    /// dual-stack network), in record order.
    names: HashMap<String, Vec<NameEntry>>,
    /// Address -> container.
    by_addr: HashMap<Ipv4Addr, usize>,
    /// IPv6 address -> container.
    by_addr6: HashMap<Ipv6Addr, usize>,
    /// Endpoint -> container.
    by_key: HashMap<EndpointKey, usize>,
}

/// One attachment under one name: (container, net, address, IPv6 address).
type NameEntry = (usize, usize, Ipv4Addr, Option<Ipv6Addr>);

/// Who asks, as far as DNS cares.
#[derive(Debug, Clone)]
pub struct Asker {
    /// The network whose gateway the query arrived on.
    pub arrival: usize,
    /// Every network whose names the asker may see, `arrival` first.
    pub visible: Vec<usize>,
}

/// Containers of other hosts on an overlay network, as the overlay agent writes them
/// (`RUN/overlay-names/NET.json`): served like local ones to the network's local containers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteNames {
    pub network: String,
    pub names: Vec<RemoteName>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RemoteName {
    /// The container's id (unique per host) and host: the record's identity.
    pub id: String,
    pub host: String,
    pub hostname: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ip: Ipv4Addr,
}

/// Where the overlay agent leaves other hosts' names for the DNS daemon.
pub fn remote_names_dir(dirs: &Dirs) -> PathBuf {
    dirs.run.join("overlay-names")
}

impl Records {
    /// Build from endpoint records and network definitions. Only `ready` endpoints count
    /// (`creating` ones are half-made, `removing` ones are going away).
    pub fn build(eps: &[Endpoint], nets: &[Network]) -> Records {
        Self::build_with_remote(eps, nets, &[])
    }

    /// The same, plus other hosts' containers on overlay networks that have a local ready
    /// endpoint (without one nobody here can ask).
    pub fn build_with_remote(
        eps: &[Endpoint],
        nets: &[Network],
        remote: &[RemoteNames],
    ) -> Records {
        let mut r = Self::build_local(eps, nets);
        for rn in remote {
            let Some(idx) = r.nets.iter().position(|n| n.name == rn.network) else {
                continue;
            };
            for n in &rn.names {
                if r.by_addr.contains_key(&n.ip) {
                    continue;
                }
                let c = r.ctrs.len();
                let mut names = vec![n.hostname.to_ascii_lowercase()];
                for a in &n.aliases {
                    let a = a.to_ascii_lowercase();
                    if !names.contains(&a) {
                        names.push(a);
                    }
                }
                for name in names {
                    r.names.entry(name).or_default().push((c, idx, n.ip, None));
                }
                r.by_addr.insert(n.ip, c);
                r.ctrs.push(Ctr {
                    hostname: n.hostname.clone(),
                    addrs: vec![(idx, n.ip)],
                    addrs6: Vec::new(),
                    host_ifs: Vec::new(),
                    key: EndpointKey {
                        id: format!("{}@{}", n.id, n.host),
                        netns_id: None,
                    },
                    netns: PathBuf::new(),
                    in_container: false,
                });
            }
        }
        r
    }

    fn build_local(eps: &[Endpoint], nets: &[Network]) -> Records {
        let mut r = Records::default();
        let by_name: HashMap<&str, &Network> = nets.iter().map(|n| (n.name.as_str(), n)).collect();
        for ep in eps.iter().filter(|e| e.state == EpState::Ready) {
            let mut addrs = Vec::new();
            let mut addrs6 = Vec::new();
            let mut host_ifs = Vec::new();
            for a in &ep.attachments {
                let Some(net) = by_name.get(a.network.as_str()).filter(|n| n.dns) else {
                    continue;
                };
                let gw = net.subnet4().gateway;
                let idx = match r.by_gateway.get(&gw) {
                    Some(i) => *i,
                    None => {
                        r.nets.push(Net {
                            name: net.name.to_string(),
                            gateway: gw,
                            // Overlay: containers of every block of this host ask here.
                            subnet: net
                                .overlay
                                .as_ref()
                                .map_or(net.subnet4().subnet, |o| o.subnet),
                            internal: net.internal,
                            upstreams: net.dns_upstreams.clone(),
                            in_container: super::listens_in_container(net),
                        });
                        r.by_gateway.insert(gw, r.nets.len() - 1);
                        r.nets.len() - 1
                    }
                };
                addrs.push((idx, a.ipv4));
                if let Some(v6) = a.ipv6 {
                    addrs6.push((idx, v6));
                }
                // Only a bridge attachment has a host-side link whose absence tells the
                // container is gone (a macvlan child lives in the container's namespace).
                if a.driver.bridged() {
                    host_ifs.push(a.host_interface.to_string());
                }
            }
            if addrs.is_empty() {
                continue;
            }
            let c = r.ctrs.len();
            let mut names: Vec<String> = vec![ep.hostname.to_ascii_lowercase()];
            for a in &ep.aliases {
                let a = a.to_ascii_lowercase();
                if !names.contains(&a) {
                    names.push(a);
                }
            }
            for n in names {
                let e = r.names.entry(n).or_default();
                for &(net, ip) in &addrs {
                    let v6 = addrs6.iter().find(|(n, _)| *n == net).map(|&(_, a)| a);
                    e.push((c, net, ip, v6));
                }
            }
            for &(_, ip) in &addrs {
                r.by_addr.insert(ip, c);
            }
            for &(_, ip) in &addrs6 {
                r.by_addr6.insert(ip, c);
            }
            let key = EndpointKey {
                id: ep.id.to_string(),
                netns_id: ep.netns_id,
            };
            r.by_key.insert(key.clone(), c);
            r.ctrs.push(Ctr {
                hostname: ep.hostname.clone(),
                in_container: addrs.iter().any(|&(n, _)| r.nets[n].in_container),
                addrs,
                addrs6,
                host_ifs,
                key,
                netns: PathBuf::from(&ep.netns),
            });
        }
        r
    }

    pub fn nets(&self) -> &[Net] {
        &self.nets
    }

    pub fn net(&self, i: usize) -> &Net {
        &self.nets[i]
    }

    /// True when some ready endpoint is on a network with DNS on: the daemon has work.
    pub fn has_endpoints(&self) -> bool {
        !self.ctrs.is_empty()
    }

    /// A host-side veth of a ready endpoint that no longer exists in this namespace: its
    /// container is gone and its poststop is still to come.
    pub fn dead_endpoint(&self) -> Option<&str> {
        self.ctrs
            .iter()
            .flat_map(|c| c.host_ifs.iter())
            .find(|i| {
                let Ok(name) = std::ffi::CString::new(i.as_str()) else {
                    return false;
                };
                // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
                unsafe { libc::if_nametoindex(name.as_ptr()) == 0 }
            })
            .map(String::as_str)
    }

    /// The gateways to listen on: those of the networks that do not listen in the container
    /// (a macvlan network's gateway is some router's address, not ours).
    pub fn gateways(&self) -> Vec<Ipv4Addr> {
        self.nets
            .iter()
            .filter(|n| !n.in_container)
            .map(|n| n.gateway)
            .collect()
    }

    /// The endpoints that get a listener inside their namespace.
    pub fn in_container(&self) -> Vec<InContainer> {
        self.ctrs
            .iter()
            .filter(|c| c.in_container)
            .map(|c| InContainer {
                key: c.key.clone(),
                netns: c.netns.clone(),
            })
            .collect()
    }

    /// Who asks on the listener inside the namespace of endpoint `key`: that endpoint, seeing
    /// every DNS-enabled network it is on (its first one counts as the arrival). None when the
    /// endpoint is no longer in the records.
    pub fn endpoint_asker(&self, key: &EndpointKey) -> Option<Asker> {
        let c = &self.ctrs[*self.by_key.get(key)?];
        let mut visible = Vec::new();
        for &(net, _) in &c.addrs {
            if !visible.contains(&net) {
                visible.push(net);
            }
        }
        Some(Asker {
            arrival: *visible.first()?,
            visible,
        })
    }

    /// Who is asking: a query from `src` that arrived on `gateway`. None when that is no
    /// gateway of ours or `src` is not on that network (another network's container aiming at
    /// this gateway directly, or an outside host): such queries are refused, so names never
    /// leak across networks whatever the firewall lets through.
    pub fn asker(&self, gateway: Ipv4Addr, src: Ipv4Addr) -> Option<Asker> {
        let arrival = *self.by_gateway.get(&gateway)?;
        if !self.nets[arrival].subnet.contains(&src) {
            return None;
        }
        let mut visible = vec![arrival];
        if let Some(&c) = self.by_addr.get(&src) {
            for &(net, _) in &self.ctrs[c].addrs {
                if !visible.contains(&net) {
                    visible.push(net);
                }
            }
        }
        Some(Asker { arrival, visible })
    }

    /// The attachments `name` (lower case, no trailing dot) stands for that `asker` may see,
    /// the arrival network's first; empty when the name is not ours.
    fn entries(&self, asker: &Asker, name: &str) -> Vec<NameEntry> {
        fn add(out: &mut Vec<NameEntry>, e: &NameEntry) {
            if !out.iter().any(|o| o.2 == e.2) {
                out.push(*e);
            }
        }
        let mut out: Vec<NameEntry> = Vec::new();
        if let Some(entries) = self.names.get(name) {
            for &net in &asker.visible {
                for e in entries.iter().filter(|e| e.1 == net) {
                    add(&mut out, e);
                }
            }
        }
        if out.is_empty() {
            // NAME.NETWORK (network names may contain dots: try each visible one).
            for &net in &asker.visible {
                let suffix = &self.nets[net].name;
                let Some(prefix) = name
                    .strip_suffix(suffix.as_str())
                    .and_then(|p| p.strip_suffix('.'))
                    .filter(|p| !p.is_empty())
                else {
                    continue;
                };
                for e in self.names.get(prefix).into_iter().flatten() {
                    if e.1 == net {
                        add(&mut out, e);
                    }
                }
            }
        }
        out
    }

    /// Addresses of `name` (lower case, no trailing dot) for `asker`, or None when the name is
    /// not ours. The arrival network's addresses come first.
    pub fn lookup(&self, asker: &Asker, name: &str) -> Option<Vec<Ipv4Addr>> {
        let out: Vec<Ipv4Addr> = self.entries(asker, name).iter().map(|e| e.2).collect();
        (!out.is_empty()).then_some(out)
    }

    /// IPv6 addresses of `name` for `asker`, in the order of [`Records::lookup`]: None when the
    /// name is not ours, empty when it is but has no IPv6 address the asker may see (NODATA).
    pub fn lookup6(&self, asker: &Asker, name: &str) -> Option<Vec<Ipv6Addr>> {
        let entries = self.entries(asker, name);
        if entries.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for ip in entries.iter().filter_map(|e| e.3) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        Some(out)
    }

    /// The hostname of the container holding `ip`, when `asker` may see it there.
    pub fn reverse(&self, asker: &Asker, ip: Ipv4Addr) -> Option<&str> {
        let c = *self.by_addr.get(&ip)?;
        let ctr = &self.ctrs[c];
        ctr.addrs
            .iter()
            .any(|(net, a)| *a == ip && asker.visible.contains(net))
            .then_some(ctr.hostname.as_str())
    }

    /// The hostname of the container holding IPv6 address `ip`, when `asker` may see it there.
    pub fn reverse6(&self, asker: &Asker, ip: Ipv6Addr) -> Option<&str> {
        let c = *self.by_addr6.get(&ip)?;
        let ctr = &self.ctrs[c];
        ctr.addrs6
            .iter()
            .any(|(net, a)| *a == ip && asker.visible.contains(net))
            .then_some(ctr.hostname.as_str())
    }

    /// Whether names the asker's networks do not own may be forwarded, and to which servers
    /// (None: not at all; an empty list: the host's). An `--internal` network never forwards;
    /// a container that is also on a network with a way out may (it could reach the world
    /// anyway). The servers are those of the first such network that names some.
    pub fn forwarding(&self, asker: &Asker) -> Option<Vec<Ipv4Addr>> {
        let open: Vec<&Net> = asker
            .visible
            .iter()
            .map(|&i| &self.nets[i])
            .filter(|n| !n.internal)
            .collect();
        if open.is_empty() {
            return None;
        }
        Some(
            open.iter()
                .find(|n| !n.upstreams.is_empty())
                .map(|n| n.upstreams.clone())
                .unwrap_or_default(),
        )
    }
}

/// What identifies a file's content: replaced by rename, it gets a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    ino: u64,
    mtime: i64,
    mtime_ns: i64,
    size: u64,
}

impl FileKey {
    fn of(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            size: m.size(),
        }
    }
}

/// Parsed JSON files of one directory, re-read only when a file changed.
#[derive(Debug)]
struct DirCache<T> {
    dir: PathBuf,
    files: HashMap<PathBuf, (FileKey, Option<T>)>,
}

impl<T: serde::de::DeserializeOwned + Clone> DirCache<T> {
    fn new(dir: PathBuf) -> Self {
        DirCache {
            dir,
            files: HashMap::new(),
        }
    }

    /// Every parsable `*.json` of the directory (a file being replaced or a bad one is skipped:
    /// the daemon serves what it can read and never stops over one file).
    fn scan(&mut self) -> Vec<T> {
        let mut seen = HashMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(_) => {
                self.files.clear();
                return Vec::new();
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let key = FileKey::of(&meta);
            let parsed = match self.files.remove(&path) {
                Some((k, v)) if k == key => v,
                _ => std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok()),
            };
            seen.insert(path, (key, parsed));
        }
        self.files = seen;
        let mut paths: Vec<&PathBuf> = self.files.keys().collect();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|p| self.files[p].1.clone())
            .collect()
    }
}

/// The run and config dirs as the daemon reads them.
#[derive(Debug)]
pub struct Loader {
    endpoints: DirCache<Endpoint>,
    networks: DirCache<Network>,
    remote: DirCache<RemoteNames>,
    endpoints_dir: PathBuf,
    networks_dir: PathBuf,
    remote_dir: PathBuf,
    /// For overlay networks' host blocks (`config::overlay_block`).
    dirs: Dirs,
    /// Modification times of the directories at the last scan: a create, rename or unlink
    /// in any changes them, so a poll costs three stats.
    stamp: Option<(Option<FileKey>, Option<FileKey>, Option<FileKey>)>,
}

fn dir_key(p: &Path) -> Option<FileKey> {
    std::fs::metadata(p).ok().map(|m| FileKey::of(&m))
}

impl Loader {
    pub fn new(dirs: &Dirs) -> Loader {
        Loader {
            endpoints: DirCache::new(dirs.endpoints_dir()),
            networks: DirCache::new(dirs.networks_dir()),
            remote: DirCache::new(remote_names_dir(dirs)),
            endpoints_dir: dirs.endpoints_dir(),
            networks_dir: dirs.networks_dir(),
            remote_dir: remote_names_dir(dirs),
            dirs: Dirs::new(&dirs.config, &dirs.run),
            stamp: None,
        }
    }

    /// True when either directory changed since the last `load`.
    pub fn changed(&self) -> bool {
        self.stamp != Some(self.stamp_now())
    }

    fn stamp_now(&self) -> (Option<FileKey>, Option<FileKey>, Option<FileKey>) {
        (
            dir_key(&self.endpoints_dir),
            dir_key(&self.networks_dir),
            dir_key(&self.remote_dir),
        )
    }

    pub fn load(&mut self) -> Records {
        // The stamp first: a change during the scan is seen by the next poll.
        self.stamp = Some(self.stamp_now());
        let nets: Vec<Network> = self
            .networks
            .scan()
            .into_iter()
            .map(
                |n| match crate::config::overlay_block(&self.dirs, &n.name) {
                    // An overlay network as this host sees it: its block's gateway.
                    Ok(Some(b)) if n.overlay.is_some() => n.with_block(b),
                    _ => n,
                },
            )
            .collect();
        let eps = self.endpoints.scan();
        let remote = self.remote.scan();
        Records::build_with_remote(&eps, &nets, &remote)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::NetworkSpec;
    use crate::names::{ContainerId, IfName, Mac, NetworkName};
    use crate::state::endpoint::Attachment;

    pub fn net(name: &str, subnet: &str, internal: bool, dns: bool) -> Network {
        NetworkSpec {
            name: name.into(),
            subnets: vec![subnet.into()],
            internal,
            no_dns: !dns,
            ..Default::default()
        }
        .build(None)
        .unwrap()
    }

    /// A dual-stack network.
    pub fn net6(name: &str, subnet: &str, subnet6: &str, internal: bool) -> Network {
        NetworkSpec {
            name: name.into(),
            subnets: vec![subnet.into(), subnet6.into()],
            internal,
            ..Default::default()
        }
        .build(None)
        .unwrap()
    }

    /// Give attachment `i` of `e` IPv6 address `v6`.
    pub fn with6(mut e: Endpoint, i: usize, v6: &str) -> Endpoint {
        let a = &mut e.attachments[i];
        a.ipv6 = Some(v6.parse().unwrap());
        a.prefix_len6 = Some(64);
        e
    }

    pub fn ep(id: &str, aliases: &[&str], on: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            id: ContainerId::new(id).unwrap(),
            state: EpState::Ready,
            pid: 1,
            netns: "/x".into(),
            netns_id: None,
            hostname: id.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            files: vec![],
            source: "attach".into(),
            attachments: on
                .iter()
                .map(|(n, ip)| Attachment {
                    network: NetworkName::new(n).unwrap(),
                    interface: IfName::new("eth0").unwrap(),
                    host_interface: IfName::new("vh").unwrap(),
                    ipv4: ip.parse().unwrap(),
                    prefix_len: 24,
                    gateway: "0.0.0.0".parse().unwrap(),
                    mac: Mac([2, 0, 0, 0, 0, 1]),
                    masquerade: true,
                    driver: crate::config::DriverKind::Bridge,
                    ipv6: None,
                    prefix_len6: None,
                    gateway6: None,
                    mtu: None,
                    tuning: Default::default(),
                })
                .collect(),
            netmode: None,
            ports: vec![],
            created: 0,
            owner: None,
            container: None,
        }
    }

    pub fn sample() -> Records {
        let nets = vec![
            net("a", "10.1.0.0/24", false, true),
            net("b", "10.2.0.0/24", false, true),
            net("int", "10.3.0.0/24", true, true),
            net("off", "10.4.0.0/24", false, false),
            net6("ds", "10.5.0.0/24", "fd00:5::/64", false),
            net6("i6", "10.6.0.0/24", "fd00:6::/64", true),
        ];
        let mut creating = ep("half", &[], &[("a", "10.1.0.9")]);
        creating.state = EpState::Creating;
        let eps = vec![
            ep("web", &["www", "Front"], &[("a", "10.1.0.2")]),
            ep("db", &[], &[("b", "10.2.0.2")]),
            ep("both", &[], &[("a", "10.1.0.3"), ("b", "10.2.0.3")]),
            ep("secret", &[], &[("int", "10.3.0.2")]),
            ep("nodns", &[], &[("off", "10.4.0.2")]),
            with6(ep("v6a", &["Six"], &[("ds", "10.5.0.2")]), 0, "fd00:5::2"),
            // On a v4-only network and a dual-stack one.
            with6(
                ep("mixed", &[], &[("a", "10.1.0.4"), ("ds", "10.5.0.4")]),
                1,
                "fd00:5::4",
            ),
            with6(ep("hush", &[], &[("i6", "10.6.0.2")]), 0, "fd00:6::2"),
            creating,
        ];
        Records::build(&eps, &nets)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn names_aliases_and_network_suffix() {
        let r = sample();
        let web = r.asker(ip("10.1.0.1"), ip("10.1.0.2")).unwrap();
        assert_eq!(r.lookup(&web, "web"), Some(vec![ip("10.1.0.2")]));
        assert_eq!(r.lookup(&web, "www"), Some(vec![ip("10.1.0.2")]));
        assert_eq!(r.lookup(&web, "front"), Some(vec![ip("10.1.0.2")]));
        assert_eq!(r.lookup(&web, "web.a"), Some(vec![ip("10.1.0.2")]));
        assert_eq!(r.lookup(&web, "both.a"), Some(vec![ip("10.1.0.3")]));
        // Only the address on a shared network.
        assert_eq!(r.lookup(&web, "both"), Some(vec![ip("10.1.0.3")]));
        assert_eq!(r.lookup(&web, "web.b"), None);
        assert_eq!(
            r.lookup(&web, "half"),
            None,
            "creating endpoints are not served"
        );
        assert_eq!(r.lookup(&web, "nodns"), None, "no DNS on its network");
        assert_eq!(r.reverse(&web, ip("10.1.0.3")), Some("both"));
        assert_eq!(r.reverse(&web, ip("10.2.0.3")), None);
    }

    #[test]
    fn isolation_and_multi_network_askers() {
        let r = sample();
        let db = r.asker(ip("10.2.0.1"), ip("10.2.0.2")).unwrap();
        assert_eq!(r.lookup(&db, "web"), None);
        assert_eq!(r.lookup(&db, "www"), None);
        assert_eq!(r.lookup(&db, "both"), Some(vec![ip("10.2.0.3")]));
        // A container on both networks sees both, its arrival network's address first.
        let both = r.asker(ip("10.2.0.1"), ip("10.2.0.3")).unwrap();
        assert_eq!(r.lookup(&both, "web"), Some(vec![ip("10.1.0.2")]));
        assert_eq!(r.lookup(&both, "db.b"), Some(vec![ip("10.2.0.2")]));
        assert_eq!(
            r.lookup(&both, "both"),
            Some(vec![ip("10.2.0.3"), ip("10.1.0.3")])
        );
        // A query at another network's gateway, or from outside, is nobody's.
        assert!(r.asker(ip("10.1.0.1"), ip("10.2.0.2")).is_none());
        assert!(r.asker(ip("10.1.0.1"), ip("192.0.2.2")).is_none());
        assert!(r.asker(ip("10.4.0.1"), ip("10.4.0.2")).is_none());
        // The host itself (from the gateway address) sees the arrival network.
        let host = r.asker(ip("10.1.0.1"), ip("10.1.0.1")).unwrap();
        assert_eq!(r.lookup(&host, "web"), Some(vec![ip("10.1.0.2")]));
    }

    #[test]
    fn internal_networks_do_not_forward() {
        let r = sample();
        let secret = r.asker(ip("10.3.0.1"), ip("10.3.0.2")).unwrap();
        assert_eq!(r.lookup(&secret, "secret"), Some(vec![ip("10.3.0.2")]));
        assert_eq!(r.forwarding(&secret), None);
        let web = r.asker(ip("10.1.0.1"), ip("10.1.0.2")).unwrap();
        assert_eq!(r.forwarding(&web), Some(vec![]));
        assert!(r.has_endpoints());
        assert_eq!(r.gateways().len(), 5);
    }

    #[test]
    fn in_container_endpoints_ask_as_themselves() {
        let mut m = net("m", "10.1.0.0/24", false, true);
        m.options
            .insert(super::super::OPT_DNS_LISTEN.into(), "container".into());
        let mut i = net("mi", "10.3.0.0/24", true, true);
        i.options
            .insert(super::super::OPT_DNS_LISTEN.into(), "container".into());
        let nets = vec![m, net("b", "10.2.0.0/24", false, true), i];
        let id = NetnsId { dev: 4, ino: 9 };
        let mut eps = vec![
            ep("mx", &["alias"], &[("m", "10.1.0.2"), ("b", "10.2.0.2")]),
            ep("my", &[], &[("m", "10.1.0.3")]),
            ep("bz", &[], &[("b", "10.2.0.3")]),
            ep("secret", &[], &[("mi", "10.3.0.2")]),
        ];
        for e in &mut eps {
            e.netns = format!("/proc/{}/ns/net", e.id);
            e.netns_id = Some(id);
        }
        let r = Records::build(&eps, &nets);
        // Only the gateways of networks that listen there; a listener for each endpoint on a
        // network that listens in the container, with the namespace to find it by.
        assert_eq!(r.gateways(), vec![ip("10.2.0.1")]);
        let inside = r.in_container();
        let ids: Vec<&str> = inside.iter().map(|c| c.key.id.as_str()).collect();
        assert_eq!(ids, vec!["mx", "my", "secret"]);
        assert_eq!(inside[0].netns, PathBuf::from("/proc/mx/ns/net"));
        assert_eq!(inside[0].key.netns_id, Some(id));
        // mx sees both of its networks, the first one first.
        let mx = r.endpoint_asker(&inside[0].key).unwrap();
        assert_eq!(r.lookup(&mx, "my"), Some(vec![ip("10.1.0.3")]));
        assert_eq!(r.lookup(&mx, "bz"), Some(vec![ip("10.2.0.3")]));
        assert_eq!(
            r.lookup(&mx, "mx"),
            Some(vec![ip("10.1.0.2"), ip("10.2.0.2")])
        );
        assert_eq!(r.reverse(&mx, ip("10.2.0.3")), Some("bz"));
        // my sees only m: not bz, and not mx's address on b.
        let my = r.endpoint_asker(&inside[1].key).unwrap();
        assert_eq!(r.lookup(&my, "bz"), None);
        assert_eq!(r.lookup(&my, "alias"), Some(vec![ip("10.1.0.2")]));
        assert_eq!(r.lookup(&my, "secret"), None);
        assert_eq!(r.forwarding(&my), Some(vec![]));
        // Internal: its own names, no forwarding.
        let secret = r.endpoint_asker(&inside[2].key).unwrap();
        assert_eq!(r.lookup(&secret, "secret"), Some(vec![ip("10.3.0.2")]));
        assert_eq!(r.forwarding(&secret), None);
        // Another namespace identity under the same id is nobody.
        let other = EndpointKey {
            id: "mx".into(),
            netns_id: Some(NetnsId { dev: 4, ino: 10 }),
        };
        assert!(r.endpoint_asker(&other).is_none());
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn aaaa_and_ip6_reverse_on_dual_stack_networks() {
        let r = sample();
        let v6a = r.asker(ip("10.5.0.1"), ip("10.5.0.2")).unwrap();
        assert_eq!(r.lookup6(&v6a, "v6a"), Some(vec![ip6("fd00:5::2")]));
        assert_eq!(r.lookup6(&v6a, "six"), Some(vec![ip6("fd00:5::2")]));
        assert_eq!(r.lookup6(&v6a, "six.ds"), Some(vec![ip6("fd00:5::2")]));
        assert_eq!(r.lookup(&v6a, "six.ds"), Some(vec![ip("10.5.0.2")]));
        assert_eq!(r.lookup6(&v6a, "mixed"), Some(vec![ip6("fd00:5::4")]));
        assert_eq!(r.lookup6(&v6a, "mixed.ds"), Some(vec![ip6("fd00:5::4")]));
        // Not ours, or not visible from ds: None (forwarded), like A.
        assert_eq!(r.lookup6(&v6a, "web"), None);
        assert_eq!(r.lookup6(&v6a, "mixed.a"), None);
        assert_eq!(r.lookup6(&v6a, "hush"), None);
        assert_eq!(r.lookup6(&v6a, "nowhere"), None);
        assert_eq!(r.reverse6(&v6a, ip6("fd00:5::4")), Some("mixed"));
        assert_eq!(r.reverse6(&v6a, ip6("fd00:5::2")), Some("v6a"));
        assert_eq!(r.reverse6(&v6a, ip6("fd00:6::2")), None);
        assert_eq!(r.reverse6(&v6a, ip6("fd00:5::99")), None);

        // From the v4-only network a: mixed exists there without IPv6 (NODATA), and its IPv6
        // address on ds is not a's to see.
        let web = r.asker(ip("10.1.0.1"), ip("10.1.0.2")).unwrap();
        assert_eq!(r.lookup6(&web, "mixed"), Some(vec![]));
        assert_eq!(r.lookup6(&web, "web"), Some(vec![]));
        assert_eq!(r.lookup6(&web, "www.a"), Some(vec![]));
        assert_eq!(r.lookup6(&web, "mixed.ds"), None);
        assert_eq!(r.lookup6(&web, "v6a"), None);
        assert_eq!(r.reverse6(&web, ip6("fd00:5::4")), None);
        assert_eq!(r.lookup(&web, "mixed"), Some(vec![ip("10.1.0.4")]));

        // mixed itself sees both networks: its IPv6 address from either gateway.
        let mixed = r.asker(ip("10.1.0.1"), ip("10.1.0.4")).unwrap();
        assert_eq!(r.lookup6(&mixed, "mixed"), Some(vec![ip6("fd00:5::4")]));
        assert_eq!(r.lookup6(&mixed, "six"), Some(vec![ip6("fd00:5::2")]));
        assert_eq!(r.reverse6(&mixed, ip6("fd00:5::2")), Some("v6a"));

        // Internal dual-stack: its own names in both families, no forwarding.
        let hush = r.asker(ip("10.6.0.1"), ip("10.6.0.2")).unwrap();
        assert_eq!(r.lookup6(&hush, "hush"), Some(vec![ip6("fd00:6::2")]));
        assert_eq!(r.reverse6(&hush, ip6("fd00:6::2")), Some("hush"));
        assert_eq!(r.lookup6(&hush, "v6a"), None);
        assert_eq!(r.forwarding(&hush), None);
    }

    #[test]
    fn upstreams_come_from_the_network() {
        let mut a = net("a", "10.1.0.0/24", false, true);
        a.dns_upstreams = vec![ip("192.0.2.53")];
        let r = Records::build(&[ep("web", &[], &[("a", "10.1.0.2")])], &[a]);
        let web = r.asker(ip("10.1.0.1"), ip("10.1.0.2")).unwrap();
        assert_eq!(r.forwarding(&web), Some(vec![ip("192.0.2.53")]));
        assert!(!Records::build(&[], &[]).has_endpoints());
    }
}
