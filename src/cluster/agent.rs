//! `nethook agent`: keeps this host's key alive under a lease, watches the cluster prefix, and
//! programs each overlay network's VXLAN device with one route, neighbour and FDB entry per
//! live remote host (flannel's vxlan model). A watch thread lists the prefix and then follows
//! it; after any break (etcd down, a partition) it lists again, so the agent catches up. The
//! data path is left in place when etcd or the agent goes away: containers keep talking.

use super::store::{ClusterStore, Event, Kv};
use super::{parse_key, BlockRecord, ClusterConfig, HostRecord, Key, PREFIX};
use crate::config::{self, DriverKind, Network};
use crate::dns::records::{remote_names_dir, RemoteName, RemoteNames};
use crate::error::Result;
use crate::netlink::route::RouteSocket;
use crate::netlink::vxlan::{RemotePeer, VxlanSpec, VXLAN_OVERHEAD};
use crate::state::endpoint::{self, EpState};
use crate::state::Dirs;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct AgentOpts {
    /// Seconds the host's key outlives a dead agent.
    pub lease_ttl: u64,
    /// Exit after this long (tests); None: run until killed.
    pub run_for: Option<Duration>,
}

enum Msg {
    Snapshot(Vec<Kv>),
    Events(Vec<Event>),
    Down(String),
}

/// What the cluster says, as far as this agent has heard.
#[derive(Default)]
struct View {
    networks: BTreeMap<String, Network>,
    hosts: BTreeMap<String, HostRecord>,
    blocks: BTreeMap<(String, Ipv4Net), BlockRecord>,
    /// (network, host, id) -> record
    names: BTreeMap<(String, String, String), RemoteName>,
}

impl View {
    fn apply_put(&mut self, kv: &Kv) {
        match parse_key(&kv.key) {
            Some(Key::Network(n)) => {
                if let Ok(net) = serde_json::from_slice::<Network>(&kv.value) {
                    if net.driver == DriverKind::Overlay && net.overlay.is_some() {
                        self.networks.insert(n, net);
                    }
                }
            }
            Some(Key::Host(h)) => {
                if let Ok(r) = serde_json::from_slice(&kv.value) {
                    self.hosts.insert(h, r);
                }
            }
            Some(Key::Block(n, b)) => {
                if let Ok(r) = serde_json::from_slice(&kv.value) {
                    self.blocks.insert((n, b), r);
                }
            }
            Some(Key::Name(n, h, id)) => {
                if let Ok(r) = serde_json::from_slice(&kv.value) {
                    self.names.insert((n, h, id), r);
                }
            }
            None => {}
        }
    }

    fn apply_delete(&mut self, key: &str) {
        match parse_key(key) {
            Some(Key::Network(n)) => {
                self.networks.remove(&n);
            }
            Some(Key::Host(h)) => {
                self.hosts.remove(&h);
            }
            Some(Key::Block(n, b)) => {
                self.blocks.remove(&(n, b));
            }
            Some(Key::Name(n, h, id)) => {
                self.names.remove(&(n, h, id));
            }
            None => {}
        }
    }

    /// The peers network `net` should have on this host: every block of a live other host.
    fn peers(&self, me: &str, net: &str) -> BTreeSet<RemotePeer> {
        self.blocks
            .iter()
            .filter(|((n, _), r)| n == net && r.host != me)
            .filter_map(|((_, b), r)| {
                let h = self.hosts.get(&r.host)?;
                Some(RemotePeer {
                    block: *b,
                    mac: r.mac,
                    vtep: h.vtep_ip,
                })
            })
            .collect()
    }
}

impl View {
    /// Other live hosts' containers on network `net`, for the DNS daemon.
    fn remote_names(&self, me: &str, net: &str) -> Vec<RemoteName> {
        self.names
            .iter()
            .filter(|((n, h, _), _)| n == net && h != me && self.hosts.contains_key(h))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// This host's containers on overlay networks, as name records keyed for etcd.
fn local_names(dirs: &Dirs, me: &str, view: &View) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for ep in endpoint::list(dirs).unwrap_or_default() {
        if ep.state != EpState::Ready {
            continue;
        }
        for a in &ep.attachments {
            let Some(net) = view.networks.get(a.network.as_str()) else {
                continue;
            };
            if !net.dns {
                continue;
            }
            let r = RemoteName {
                id: ep.id.to_string(),
                host: me.to_string(),
                hostname: ep.hostname.clone(),
                aliases: ep.aliases.clone(),
                ip: a.ipv4,
            };
            out.insert(
                super::key_name(a.network.as_str(), me, ep.id.as_str()),
                serde_json::to_vec(&r).expect("name record serialises"),
            );
        }
    }
    out
}

/// Names this agent has put in etcd, under which lease.
#[derive(Default)]
struct Published {
    lease: Option<i64>,
    keys: BTreeMap<String, Vec<u8>>,
    /// What was last written for the DNS daemon, per network.
    remote_files: BTreeMap<String, Vec<RemoteName>>,
    /// How many overlay networks the view had when the names were last computed.
    networks_seen: usize,
}

impl Published {
    /// Put new and changed local names, delete gone ones; all under the host's lease, so they
    /// vanish with the host. False: etcd failed, try again later.
    fn sync(
        &mut self,
        store: &dyn ClusterStore,
        lease: Option<i64>,
        want: BTreeMap<String, Vec<u8>>,
    ) -> bool {
        let Some(l) = lease else { return false };
        if self.lease != Some(l) {
            // A new lease (first run, or the old one expired): everything again.
            self.keys.clear();
            self.lease = Some(l);
        }
        for (k, v) in &want {
            if self.keys.get(k) == Some(v) {
                continue;
            }
            if let Err(e) = store.put(k, v, Some(l)) {
                log(&format!("publishing names: {e}"));
                return false;
            }
            self.keys.insert(k.clone(), v.clone());
        }
        let gone: Vec<String> = self
            .keys
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Err(e) = store.delete(&k) {
                log(&format!("withdrawing names: {e}"));
                return false;
            }
            self.keys.remove(&k);
        }
        true
    }

    /// Write other hosts' names where the DNS daemon reads them (only what changed).
    fn write_remote(&mut self, dirs: &Dirs, me: &str, view: &View) {
        let dir = remote_names_dir(dirs);
        for name in view.networks.keys() {
            let names = view.remote_names(me, name);
            if self.remote_files.get(name) == Some(&names) {
                continue;
            }
            let rn = RemoteNames {
                network: name.clone(),
                names: names.clone(),
            };
            let json = serde_json::to_vec(&rn).expect("names serialise");
            let r = crate::state::ensure_dir(&dir).and_then(|_| {
                crate::state::atomic_write(&dir.join(format!("{name}.json")), &json, false)
            });
            match r {
                Ok(()) => {
                    self.remote_files.insert(name.clone(), names);
                }
                Err(e) => log(&format!("writing names of network {name}: {e}")),
            }
        }
    }
}

/// A network's device and what is programmed on it.
struct Programmed {
    index: u32,
    peers: BTreeSet<RemotePeer>,
}

pub fn run(dirs: &Dirs, opts: &AgentOpts) -> Result<()> {
    let cfg = ClusterConfig::load_required(dirs)?;
    let store: Arc<dyn ClusterStore> = Arc::new(cfg.store()?);
    let host = RouteSocket::open()?;
    let mtu = super::vtep_mtu(&host, cfg.vtep_ip)? - VXLAN_OVERHEAD;
    crate::driver::bridge::ensure_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    log(&format!(
        "host {} vtep {} watching {}",
        cfg.name,
        cfg.vtep_ip,
        store.describe()
    ));

    let (tx, rx) = mpsc::channel();
    {
        let store = store.clone();
        std::thread::spawn(move || watch_loop(store.as_ref(), tx));
    }

    let mut view = View::default();
    // Networks known locally work with etcd away too (their peers come once etcd is back).
    for n in config::list(dirs)? {
        if n.driver == DriverKind::Overlay {
            view.networks.insert(n.name.to_string(), n);
        }
    }
    let mut programmed: BTreeMap<String, Programmed> = BTreeMap::new();
    let mut lease: Option<i64> = None;
    let keepalive_every = Duration::from_millis((opts.lease_ttl * 1000 / 3).max(300));
    let mut next_keepalive = Instant::now();
    let started = Instant::now();
    let host_value = serde_json::to_vec(&HostRecord {
        vtep_ip: cfg.vtep_ip,
    })
    .expect("host record serialises");
    reconcile(dirs, &cfg, &host, mtu, &view, &mut programmed);
    let mut published = Published::default();
    let mut failing: Option<String> = None;
    // Local names are republished when the endpoints directory changes (or after a failure).
    let mut names_stamp = None;
    let mut names_dirty = true;
    loop {
        if opts.run_for.is_some_and(|d| started.elapsed() >= d) {
            return Ok(());
        }
        if Instant::now() >= next_keepalive {
            next_keepalive = Instant::now() + keepalive_every;
            let was = lease;
            lease = register(
                store.as_ref(),
                &cfg,
                lease,
                opts.lease_ttl,
                &host_value,
                &mut failing,
            );
            names_dirty |= lease != was;
        }
        let stamp = dir_stamp(&dirs.endpoints_dir());
        if names_dirty || stamp != names_stamp {
            names_stamp = stamp;
            let want = local_names(dirs, &cfg.name, &view);
            names_dirty = !published.sync(store.as_ref(), lease, want);
        }
        let wait = next_keepalive
            .saturating_duration_since(Instant::now())
            .min(NAMES_POLL);
        let first = match rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        // Take everything already queued, then program once.
        let mut changed = false;
        for m in std::iter::once(first).chain(rx.try_iter()) {
            match m {
                Msg::Snapshot(kvs) => {
                    let locals: Vec<Network> = view
                        .networks
                        .values()
                        .filter(|n| config::load(dirs, &n.name).ok().flatten().is_some())
                        .cloned()
                        .collect();
                    view = View::default();
                    for n in locals {
                        view.networks.insert(n.name.to_string(), n);
                    }
                    for kv in &kvs {
                        view.apply_put(kv);
                    }
                    changed = true;
                    // Whatever etcd lost meanwhile: this host's names go in again.
                    published.keys.clear();
                    names_dirty = true;
                    log(&format!(
                        "in sync: {} hosts, {} blocks, {} networks",
                        view.hosts.len(),
                        view.blocks.len(),
                        view.networks.len()
                    ));
                }
                Msg::Events(evs) => {
                    for e in &evs {
                        match e {
                            Event::Put(kv) => view.apply_put(kv),
                            Event::Delete(k) => view.apply_delete(k),
                        }
                    }
                    changed = true;
                }
                Msg::Down(why) => log(&format!("etcd unreachable, data path kept: {why}")),
            }
        }
        if changed {
            reconcile(dirs, &cfg, &host, mtu, &view, &mut programmed);
            published.write_remote(dirs, &cfg.name, &view);
            // A network learned now may have local containers to publish.
            names_dirty |= published.networks_seen != view.networks.len();
            published.networks_seen = view.networks.len();
        }
    }
}

/// How often the agent looks for local containers that came or went.
const NAMES_POLL: Duration = Duration::from_millis(200);

fn dir_stamp(p: &std::path::Path) -> Option<(i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.ino() as i64))
}

fn log(msg: &str) {
    eprintln!("nethook agent: {msg}");
}

/// Keep this host's key alive: grant a lease and put the key when there is none (first run,
/// expired during an outage), else refresh it. Failures are logged and retried next time.
fn register(
    store: &dyn ClusterStore,
    cfg: &ClusterConfig,
    lease: Option<i64>,
    ttl: u64,
    value: &[u8],
    failing: &mut Option<String>,
) -> Option<i64> {
    // Each failure is logged once, not at every retry; the recovery too.
    let mut report = |r: std::result::Result<(), String>| match (r, failing.is_some()) {
        (Ok(()), true) => {
            log("etcd reachable again");
            *failing = None;
        }
        (Err(e), _) if failing.as_deref() != Some(e.as_str()) => {
            log(&e);
            *failing = Some(e);
        }
        _ => {}
    };
    if let Some(l) = lease {
        match store.keepalive(l) {
            Ok(true) => {
                report(Ok(()));
                return Some(l);
            }
            Ok(false) => log("lease expired: registering again"),
            Err(e) => {
                report(Err(format!("keepalive: {e}")));
                return Some(l);
            }
        }
    }
    let r = store.grant(ttl).and_then(|l| {
        store
            .put(&super::key_host(&cfg.name), value, Some(l))
            .map(|_| l)
    });
    match r {
        Ok(l) => {
            report(Ok(()));
            Some(l)
        }
        Err(e) => {
            report(Err(format!("registering: {e}")));
            None
        }
    }
}

/// List the prefix, then follow it. After a break (etcd down, a partition, a watch silent for
/// 30 s) watch again from the last revision seen, so the events missed meanwhile arrive; list
/// again only when etcd cancels the watch (that revision was compacted away).
fn watch_loop(store: &dyn ClusterStore, tx: mpsc::Sender<Msg>) {
    let mut down = false;
    // The revision the agent's view is at; None: list first.
    let mut at: Option<i64> = None;
    loop {
        let rev = match at {
            Some(r) => r,
            None => match store.range(PREFIX) {
                Ok((kvs, rev)) => {
                    down = false;
                    if tx.send(Msg::Snapshot(kvs)).is_err() {
                        return;
                    }
                    rev
                }
                Err(e) => {
                    if !down && tx.send(Msg::Down(e.to_string())).is_err() {
                        return;
                    }
                    down = true;
                    std::thread::sleep(RETRY);
                    continue;
                }
            },
        };
        let mut seen = rev;
        let r = store.watch(PREFIX, rev + 1, &mut |evs, r| {
            seen = seen.max(r);
            down = false;
            tx.send(Msg::Events(evs)).is_ok()
        });
        at = Some(seen);
        match r {
            Ok(true) => return,
            Ok(false) => at = None,
            Err(e) => {
                let why = e.to_string();
                // Only idle (no event for 30 s): renew at once, nothing to report.
                let idle = why.contains("timed out") || why.contains("temporarily unavailable");
                if !idle {
                    if !down && tx.send(Msg::Down(why)).is_err() {
                        return;
                    }
                    down = true;
                    std::thread::sleep(RETRY);
                }
            }
        }
    }
}

/// Pause between attempts to reach etcd again.
const RETRY: Duration = Duration::from_millis(250);

/// Bring every overlay network's device and peers in line with the view. Errors are logged:
/// one network's trouble does not stop the others, and the next change retries.
fn reconcile(
    dirs: &Dirs,
    cfg: &ClusterConfig,
    host: &RouteSocket,
    mtu: u32,
    view: &View,
    programmed: &mut BTreeMap<String, Programmed>,
) {
    for (name, net) in &view.networks {
        let info = net.overlay.as_ref().expect("overlay networks only");
        // Other hosts' definitions become known here, so this host's hooks can use them.
        if let Ok(n) = crate::names::NetworkName::new(name) {
            if matches!(config::load(dirs, &n), Ok(None)) {
                match config::save(dirs, net) {
                    Ok(()) => log(&format!("network {name} learned from the cluster")),
                    Err(e) => log(&format!("saving network {name}: {e}")),
                }
            }
        }
        if !programmed.contains_key(name) {
            let dev = super::vxlan_name(info.vni);
            let spec = VxlanSpec {
                name: &dev,
                vni: info.vni,
                local: cfg.vtep_ip,
                mac: super::vxlan_mac(&cfg.name, name),
                mtu,
            };
            let index = match host.ensure_vxlan(&spec).and_then(|i| {
                // No IPv6 on the tunnel device: nothing of nethook's uses it, and its
                // link-local chatter would be flooded to every peer.
                crate::driver::bridge::ensure_sysctl(
                    &format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"),
                    "1",
                )
                .map(|_| i)
            }) {
                Ok(i) => i,
                Err(e) => {
                    log(&format!("network {name}: {e}"));
                    continue;
                }
            };
            // Routes an earlier agent left that the view no longer has.
            let want: BTreeSet<Ipv4Net> = view
                .peers(&cfg.name, name)
                .iter()
                .map(|p| p.block)
                .collect();
            for b in host.routes_via(index).unwrap_or_default() {
                if !want.contains(&b) {
                    let _ = host.remove_route_and_neigh(index, b);
                }
            }
            programmed.insert(
                name.clone(),
                Programmed {
                    index,
                    peers: BTreeSet::new(),
                },
            );
        }
        let p = programmed.get_mut(name).expect("inserted above");
        let want = view.peers(&cfg.name, name);
        let gone: Vec<RemotePeer> = p.peers.difference(&want).cloned().collect();
        let new: Vec<RemotePeer> = want.difference(&p.peers).cloned().collect();
        for peer in &gone {
            // A host with several blocks shares one FDB entry among them: keep it while any
            // of its blocks stays.
            let shared = want
                .iter()
                .any(|w| w.mac == peer.mac && w.vtep == peer.vtep);
            match host.remove_peer(p.index, peer, !shared) {
                Ok(()) => {
                    p.peers.remove(peer);
                }
                Err(e) => log(&format!("network {name}: removing {}: {e}", peer.block)),
            }
        }
        for peer in &new {
            match host.add_peer(p.index, peer) {
                Ok(()) => {
                    p.peers.insert(peer.clone());
                }
                Err(e) => log(&format!("network {name}: adding {}: {e}", peer.block)),
            }
        }
        if !gone.is_empty() || !new.is_empty() {
            log(&format!(
                "network {name}: {} peers (+{} -{})",
                p.peers.len(),
                new.len(),
                gone.len()
            ));
        }
    }
}
