//! Overlay networks across hosts, with etcd as the cluster store (README "Overlay networks").
//!
//! Keys, all under one prefix that carries the format version:
//! ```text
//! /nethook/v1/networks/NAME            network definition (the Network JSON, cluster subnet)
//! /nethook/v1/hosts/HOST               {"vtep_ip": IP} attached to the host agent's lease
//! /nethook/v1/blocks/NAME/A.B.C.D-P    {"host": HOST, "mac": VXLAN MAC}, created in a txn
//! /nethook/v1/names/NAME/HOST/ID       {"id", "host", "hostname", "aliases", "ip"}: a container's
//!                                      DNS record, written by its host's agent under its lease
//! ```
//! The hook reads and writes only its own host's keys, and only when the host needs a new
//! address block; everything else is local files. The agent watches the prefix and programs
//! the data path (src/netlink/vxlan.rs).

pub mod agent;
pub mod http;
pub mod store;

use crate::config::{self, DriverKind, Network};
use crate::error::{Error, Result};
use crate::names::{fnv1a, Mac, NetworkName};
use crate::state::{self, Dirs, Lock};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;
use store::{ClusterStore, Etcd};

/// Every key nethook writes starts with this; `v1` is the format version.
pub const PREFIX: &str = "/nethook/v1/";
/// How long a hook or a CLI command waits for etcd.
pub const TIMEOUT: Duration = Duration::from_secs(2);

pub fn key_network(name: &str) -> String {
    format!("{PREFIX}networks/{name}")
}
pub fn key_host(host: &str) -> String {
    format!("{PREFIX}hosts/{host}")
}
pub fn blocks_prefix(net: &str) -> String {
    format!("{PREFIX}blocks/{net}/")
}
pub fn key_name(net: &str, host: &str, id: &str) -> String {
    format!("{PREFIX}names/{net}/{host}/{id}")
}
pub fn key_block(net: &str, block: Ipv4Net) -> String {
    format!(
        "{}{}-{}",
        blocks_prefix(net),
        block.network(),
        block.prefix_len()
    )
}

/// What a key under the prefix is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Network(String),
    Host(String),
    Block(String, Ipv4Net),
    /// (network, host, container id)
    Name(String, String, String),
}

pub fn parse_key(key: &str) -> Option<Key> {
    let rest = key.strip_prefix(PREFIX)?;
    let (kind, rest) = rest.split_once('/')?;
    match kind {
        "networks" => Some(Key::Network(rest.to_string())),
        "hosts" => Some(Key::Host(rest.to_string())),
        "names" => {
            let mut it = rest.splitn(3, '/');
            let (n, h, id) = (it.next()?, it.next()?, it.next()?);
            Some(Key::Name(n.into(), h.into(), id.into()))
        }
        "blocks" => {
            let (net, b) = rest.split_once('/')?;
            let (ip, p) = b.rsplit_once('-')?;
            let block = Ipv4Net::new(ip.parse().ok()?, p.parse().ok()?).ok()?;
            Some(Key::Block(net.to_string(), block))
        }
        _ => None,
    }
}

/// This host's cluster settings, `cluster.json` in the config dir (`nethook cluster join`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub etcd: Vec<String>,
    pub vtep_ip: Ipv4Addr,
    pub name: String,
}

pub fn cluster_file(dirs: &Dirs) -> std::path::PathBuf {
    dirs.config.join("cluster.json")
}

impl ClusterConfig {
    pub fn load(dirs: &Dirs) -> Result<Option<ClusterConfig>> {
        let path = cluster_file(dirs);
        match state::read_optional(&path)? {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                Error::invalid(
                    format!("cluster file {}", path.display()),
                    e.to_string(),
                    "run 'nethook cluster join' again",
                )
            }),
        }
    }

    pub fn load_required(dirs: &Dirs) -> Result<ClusterConfig> {
        Self::load(dirs)?.ok_or_else(|| {
            Error::invalid(
                "overlay networks",
                "this host has not joined a cluster",
                "run 'nethook cluster join --etcd URL --vtep-ip IP' first",
            )
        })
    }

    pub fn save(&self, dirs: &Dirs) -> Result<()> {
        state::ensure_dir(&dirs.config)?;
        let mut json = serde_json::to_vec_pretty(self).expect("cluster config serialises");
        json.push(b'\n');
        state::atomic_write(&cluster_file(dirs), &json, true)
    }

    pub fn store(&self) -> Result<Etcd> {
        Etcd::new(&self.etcd, TIMEOUT)
    }
}

/// A host's record (`hosts/HOST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub vtep_ip: Ipv4Addr,
}

/// A claimed block (`blocks/NET/CIDR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub host: String,
    pub mac: Mac,
}

/// The MAC of a host's VXLAN device on a network: stable, from both names, so the hook can
/// write it into the block record before the agent made the device.
pub fn vxlan_mac(host: &str, net: &str) -> Mac {
    let h = fnv1a(&["vxlan-mac", host, net]).to_be_bytes();
    Mac([0x02, 0x6f, h[0], h[1], h[2], h[3]])
}

/// The VXLAN device of an overlay network (at most 14 bytes: VNIs have 24 bits).
pub fn vxlan_name(vni: u32) -> String {
    format!("nh-vx{vni}")
}

/// This host's name: `/proc/sys/kernel/hostname`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `nethook cluster join`: check etcd answers and the host name is not another VTEP's, then
/// keep the settings in `cluster.json`. The agent registers the host (with its lease).
pub fn join(
    dirs: &Dirs,
    etcd: &[String],
    vtep_ip: Ipv4Addr,
    name: Option<&str>,
) -> Result<ClusterConfig> {
    let name = match name {
        Some(n) => n.to_string(),
        None => hostname(),
    };
    if name.is_empty()
        || name.len() > 253
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::invalid(
            format!("host name {name:?}"),
            "is not a usable cluster member name",
            "give --name with letters, digits, '-', '_' or '.'",
        ));
    }
    let cfg = ClusterConfig {
        etcd: etcd.to_vec(),
        vtep_ip,
        name,
    };
    let store = cfg.store()?;
    if let Some(kv) = store.get(&key_host(&cfg.name))? {
        if let Ok(h) = serde_json::from_slice::<HostRecord>(&kv.value) {
            if h.vtep_ip != vtep_ip {
                return Err(Error::invalid(
                    format!("host name {}", cfg.name),
                    format!("is live in the cluster with VTEP {}", h.vtep_ip),
                    "give this host another --name",
                ));
            }
        }
    }
    cfg.save(dirs)?;
    Ok(cfg)
}

/// `network create --driver overlay`: the MTU from the VTEP's interface, then the definition
/// into etcd (create-if-absent; the same definition again is success) before the local file.
pub fn create_network(
    net: &mut Network,
    dirs: &Dirs,
    host: Option<&crate::netlink::route::RouteSocket>,
) -> Result<()> {
    let cfg = ClusterConfig::load_required(dirs)?;
    if net.mtu.is_none() {
        if let Some(h) = host {
            net.mtu = Some(vtep_mtu(h, cfg.vtep_ip)? - crate::netlink::vxlan::VXLAN_OVERHEAD);
        }
    }
    let store = cfg.store()?;
    let info = net
        .overlay
        .clone()
        .expect("overlay networks have overlay settings");
    let (nets, _) = store.range(&format!("{PREFIX}networks/"))?;
    for kv in &nets {
        let Ok(other) = serde_json::from_slice::<Network>(&kv.value) else {
            continue;
        };
        let Some(oi) = other.overlay else { continue };
        if other.name == net.name {
            if oi == info {
                // Created on another host first: take that definition as it is.
                *net = serde_json::from_slice(&kv.value).expect("parsed above");
                return Ok(());
            }
            return Err(Error::invalid(
                format!("network {}", net.name),
                format!(
                    "exists in the cluster with subnet {} and vni {}",
                    oi.subnet, oi.vni
                ),
                "create it with the same settings, or pick another name",
            ));
        }
        if oi.vni == info.vni {
            return Err(Error::invalid(
                format!("vni {}", info.vni),
                format!("is taken by overlay network {}", other.name),
                "give another --vni",
            ));
        }
        if oi.subnet.contains(&info.subnet.network()) || info.subnet.contains(&oi.subnet.network())
        {
            return Err(Error::invalid(
                format!("subnet {}", info.subnet),
                format!("overlaps overlay network {} ({})", other.name, oi.subnet),
                "give another --subnet",
            ));
        }
    }
    let json = serde_json::to_vec(&*net).expect("network serialises");
    if !store.create(&key_network(net.name.as_str()), &json)? {
        return Err(Error::invalid(
            format!("network {}", net.name),
            "was created in the cluster at the same moment",
            "run 'nethook network inspect' and retry if it differs",
        ));
    }
    Ok(())
}

/// The MTU of the interface that holds the VTEP address.
pub fn vtep_mtu(host: &crate::netlink::route::RouteSocket, vtep: Ipv4Addr) -> Result<u32> {
    let addr = host
        .addrs4()?
        .into_iter()
        .find(|a| a.addr == vtep)
        .ok_or_else(|| {
            Error::invalid(
                format!("vtep ip {vtep}"),
                "is not an address of this host",
                "give --vtep-ip an address of this host's underlay interface",
            )
        })?;
    Ok(host
        .links()?
        .into_iter()
        .find(|l| l.index == addr.index)
        .and_then(|l| l.mtu)
        .unwrap_or(1500))
}

/// The host-local view of overlay network `net` for an attach: addresses from this host's
/// block, claiming one in etcd first if the host holds none (the only time a hook talks to
/// etcd). Other networks are returned as they are.
pub fn local_view(dirs: &Dirs, net: Network) -> Result<Network> {
    let Some(info) = net.overlay.clone() else {
        return Ok(net);
    };
    if net.driver != DriverKind::Overlay || net.subnet4().subnet.prefix_len() == info.block_prefix {
        return Ok(net);
    }
    let _l = Lock::acquire(&dirs.network_lock(&net.name))?;
    if let Some(b) = config::overlay_block(dirs, &net.name)? {
        return Ok(net.with_block(b));
    }
    let block = claim_recorded(dirs, &net.name, &info, &[]).map_err(|e| {
        Error::invalid(
            format!("network {}", net.name),
            format!("this host holds no address block yet and claiming one failed: {e}"),
            "start etcd or check that this host reaches it (hosts holding a block keep starting containers)",
        )
    })?;
    Ok(net.with_block(block))
}

/// Claim one more block in etcd and add it to the host's block file. The caller holds the
/// network's lock.
fn claim_recorded(
    dirs: &Dirs,
    name: &NetworkName,
    info: &config::OverlayInfo,
    held: &[Ipv4Net],
) -> Result<Ipv4Net> {
    let cfg = ClusterConfig::load_required(dirs)?;
    let store = cfg.store()?;
    let block = claim_block(&store, &cfg.name, name, info, held)?;
    let path = config::overlay_block_file(dirs, name);
    state::ensure_dir(path.parent().expect("block file has a parent"))?;
    let mut text = String::new();
    for b in held.iter().chain(std::iter::once(&block)) {
        text.push_str(&format!("{b}\n"));
    }
    state::atomic_write(&path, text.as_bytes(), true)?;
    Ok(block)
}

/// Lease an address for `id` on `net` (the caller holds the network's lock): on an overlay
/// network from the first of this host's blocks with room, claiming another block in etcd
/// only when all are full. Returns the address and the view of the block it is in (its
/// prefix and gateway are the container's).
pub fn allocate(
    dirs: &Dirs,
    leases: &mut dyn crate::ipam::LeaseStore,
    net: &Network,
    id: &crate::names::ContainerId,
    want: Option<Ipv4Addr>,
) -> Result<(Ipv4Addr, Network)> {
    let Some(info) = net.overlay.clone() else {
        return Ok((crate::ipam::allocate(leases, net, id, want)?, net.clone()));
    };
    let held = config::overlay_blocks(dirs, &net.name)?;
    if let Some(ip) = want {
        let b = held.iter().find(|b| b.contains(&ip)).or(held.first());
        let v = match b {
            Some(b) => net.clone().with_block(*b),
            None => net.clone(),
        };
        return Ok((crate::ipam::allocate(leases, &v, id, Some(ip))?, v));
    }
    for b in &held {
        let v = net.clone().with_block(*b);
        match crate::ipam::allocate(leases, &v, id, None) {
            Ok(ip) => return Ok((ip, v)),
            Err(e) if crate::ipam::is_exhausted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    let list: Vec<String> = held.iter().map(|b| b.to_string()).collect();
    let block = claim_recorded(dirs, &net.name, &info, &held).map_err(|e| {
        Error::invalid(
            format!("network {}", net.name),
            format!(
                "every address block this host holds ({}) is full and claiming another failed: {e}",
                list.join(", ")
            ),
            "start etcd or check that this host reaches it, or stop containers on this host",
        )
    })?;
    let v = net.clone().with_block(block);
    Ok((crate::ipam::allocate(leases, &v, id, None)?, v))
}

/// Claim a free block of `info.subnet` for `host` (or find the one it already holds): a
/// create-if-absent transaction per candidate, so two hosts never hold the same block.
pub fn claim_block(
    store: &dyn ClusterStore,
    host: &str,
    net: &NetworkName,
    info: &config::OverlayInfo,
    held: &[Ipv4Net],
) -> Result<Ipv4Net> {
    let (kvs, _) = store.range(&blocks_prefix(net.as_str()))?;
    let mut taken = std::collections::HashSet::new();
    for kv in &kvs {
        let Some(Key::Block(_, b)) = parse_key(&kv.key) else {
            continue;
        };
        if let Ok(r) = serde_json::from_slice::<BlockRecord>(&kv.value) {
            // A block this host holds in etcd but not locally (its file was lost): take it back.
            if r.host == host && !held.contains(&b) {
                return Ok(b);
            }
        }
        taken.insert(b);
    }
    let record = serde_json::to_vec(&BlockRecord {
        host: host.to_string(),
        mac: vxlan_mac(host, net.as_str()),
    })
    .expect("block record serialises");
    let blocks = info.subnet.subnets(info.block_prefix).map_err(|e| {
        Error::invalid(
            format!("subnet {}", info.subnet),
            e.to_string(),
            "fix the network",
        )
    })?;
    for b in blocks.filter(|b| !taken.contains(b)) {
        if store.create(&key_block(net.as_str(), b), &record)? {
            return Ok(b);
        }
    }
    Err(Error::invalid(
        format!("network {net}"),
        format!(
            "every /{} block of {} is held by a host",
            info.block_prefix, info.subnet
        ),
        "remove blocks of hosts that left (etcdctl del), or use a larger subnet",
    ))
}

#[cfg(test)]
pub mod mem {
    //! An in-memory ClusterStore for unit tests.
    use super::store::{ClusterStore, Kv};
    use crate::error::{Error, Result};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Mem {
        pub kv: Mutex<BTreeMap<String, Vec<u8>>>,
        pub down: std::sync::atomic::AtomicBool,
    }

    impl Mem {
        fn check(&self) -> Result<()> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::invalid(
                    "etcd at mem",
                    "connection refused",
                    "start it",
                ));
            }
            Ok(())
        }
    }

    impl ClusterStore for Mem {
        fn range(&self, prefix: &str) -> Result<(Vec<Kv>, i64)> {
            self.check()?;
            let m = self.kv.lock().unwrap();
            Ok((
                m.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| Kv {
                        key: k.clone(),
                        value: v.clone(),
                        mod_revision: 1,
                        lease: 0,
                    })
                    .collect(),
                1,
            ))
        }
        fn get(&self, key: &str) -> Result<Option<Kv>> {
            Ok(self.range(key)?.0.into_iter().find(|k| k.key == key))
        }
        fn put(&self, key: &str, value: &[u8], _lease: Option<i64>) -> Result<()> {
            self.check()?;
            self.kv.lock().unwrap().insert(key.into(), value.to_vec());
            Ok(())
        }
        fn create(&self, key: &str, value: &[u8]) -> Result<bool> {
            self.check()?;
            let mut m = self.kv.lock().unwrap();
            if m.contains_key(key) {
                return Ok(false);
            }
            m.insert(key.into(), value.to_vec());
            Ok(true)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.check()?;
            self.kv.lock().unwrap().remove(key);
            Ok(())
        }
        fn grant(&self, _ttl: u64) -> Result<i64> {
            Ok(1)
        }
        fn keepalive(&self, _lease: i64) -> Result<bool> {
            Ok(true)
        }
        fn watch(&self, _p: &str, _f: i64, _cb: &mut super::store::WatchFn<'_>) -> Result<bool> {
            Ok(false)
        }
        fn describe(&self) -> String {
            "mem".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> config::OverlayInfo {
        config::OverlayInfo {
            subnet: "10.200.0.0/22".parse().unwrap(),
            vni: 7,
            block_prefix: 24,
        }
    }

    #[test]
    fn keys_round_trip() {
        let b: Ipv4Net = "10.200.5.0/24".parse().unwrap();
        assert_eq!(key_block("ov", b), "/nethook/v1/blocks/ov/10.200.5.0-24");
        assert_eq!(
            parse_key(&key_block("ov", b)),
            Some(Key::Block("ov".into(), b))
        );
        assert_eq!(parse_key(&key_host("h1")), Some(Key::Host("h1".into())));
        assert_eq!(
            parse_key(&key_network("ov")),
            Some(Key::Network("ov".into()))
        );
        assert_eq!(parse_key("/other/x"), None);
        assert_eq!(
            parse_key(&key_name("ov", "h1", "c1")),
            Some(Key::Name("ov".into(), "h1".into(), "c1".into()))
        );
        assert!(vxlan_name(0xff_ffff).len() <= 15);
    }

    #[test]
    fn hosts_get_distinct_blocks_and_keep_theirs() {
        let m = mem::Mem::default();
        let net = NetworkName::new("ov").unwrap();
        let a = claim_block(&m, "a", &net, &info(), &[]).unwrap();
        let b = claim_block(&m, "b", &net, &info(), &[]).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            claim_block(&m, "a", &net, &info(), &[]).unwrap(),
            a,
            "a finds its block again"
        );
        let a2 = claim_block(&m, "a", &net, &info(), &[a]).unwrap();
        assert!(a2 != a && a2 != b, "a second block for a: {a2}");
        claim_block(&m, "c", &net, &info(), &[]).unwrap();
        let e = claim_block(&m, "e", &net, &info(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("every /24 block"), "{e}");
        m.down.store(true, std::sync::atomic::Ordering::Relaxed);
        let e = claim_block(&m, "f", &net, &info(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("etcd at mem"), "{e}");
    }
}
