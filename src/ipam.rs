//! Address allocation. One file per leased address under `run/leases/NETWORK/`, named by the
//! address and holding the container id; claiming is `O_CREAT|O_EXCL`, so two processes can never
//! hold one address even if the lock were bypassed. The per-network lock (taken by the caller)
//! makes the `last` cursor consistent. Allocation rotates from the last handed-out address, so a
//! just-released address is not reused at once, and costs O(1) file operations while the subnet
//! has room, however many leases exist.

use crate::config::{is_host_address, Network};
use crate::error::{Error, Result};
use crate::names::{ContainerId, NetworkName};
use crate::state::{self, Dirs};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;

/// The addresses a network hands out: its range (or subnet) minus network, broadcast and gateway.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    first: u32,
    last: u32,
    gateway: u32,
}

impl Pool {
    pub fn of(net: &Network) -> Pool {
        let s = net.subnet4();
        let range = s.ip_range.unwrap_or(s.subnet);
        let mut first = u32::from(range.network());
        let mut last = u32::from(range.broadcast());
        // The subnet's network and broadcast addresses are never handed out, even when an
        // ip_range touches them.
        first = first.max(u32::from(s.subnet.network()) + 1);
        last = last.min(u32::from(s.subnet.broadcast()) - 1);
        Pool {
            first,
            last,
            gateway: u32::from(s.gateway),
        }
    }
    pub fn size(&self) -> u32 {
        if self.last < self.first {
            0
        } else {
            self.last - self.first + 1
        }
    }
    /// Candidates in rotation order: after `cursor`, wrapping, skipping the gateway.
    pub fn candidates(&self, cursor: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let size = self.size();
        let start = match cursor.map(u32::from) {
            Some(c) if c >= self.first && c < self.last => c + 1 - self.first,
            _ => 0,
        };
        (0..size)
            .map(move |i| self.first + (start + i) % size)
            .filter(move |a| *a != self.gateway)
            .map(Ipv4Addr::from)
    }
}

/// Where leases are kept. The file store is the real one; tests use an in-memory one to check
/// the allocation rules exhaustively.
pub trait LeaseStore {
    /// Claim `ip` for `id`; `Ok(false)` when someone holds it.
    fn claim(&mut self, ip: Ipv4Addr, id: &ContainerId) -> Result<bool>;
    fn holder(&self, ip: Ipv4Addr) -> Result<Option<String>>;
    fn cursor(&self) -> Option<Ipv4Addr>;
    fn set_cursor(&mut self, ip: Ipv4Addr) -> Result<()>;
}

/// Pick an address: the static request if given (checked), else the next free one.
pub fn allocate(
    store: &mut dyn LeaseStore,
    net: &Network,
    id: &ContainerId,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let pool = Pool::of(net);
    let s = net.subnet4();
    if let Some(ip) = requested {
        if !is_host_address(&s.subnet, ip) || ip == s.gateway {
            let why = if ip == s.gateway {
                "is the network's gateway".to_string()
            } else {
                format!("is not a host address of {}", s.subnet)
            };
            return Err(Error::invalid(
                format!("static address {ip} on network {}", net.name),
                why,
                "pick a free address inside the subnet",
            ));
        }
        if store.claim(ip, id)? {
            return Ok(ip);
        }
        let holder = store
            .holder(ip)?
            .unwrap_or_else(|| "another container".into());
        return Err(Error::invalid(
            format!("static address {ip} on network {}", net.name),
            format!("is taken by {holder}"),
            "pick another address or remove that container",
        ));
    }
    for ip in pool.candidates(store.cursor()) {
        if store.claim(ip, id)? {
            store.set_cursor(ip)?;
            return Ok(ip);
        }
    }
    if net.overlay.is_some() {
        // One block per host and overlay network (README "Overlay networks").
        return Err(Error::invalid(
            format!("network {}", net.name),
            format!(
                "this host's block {} has no free address left ({} in use)",
                net.subnet4().subnet,
                pool.size()
            ),
            "remove containers or run 'nethook gc' (a host holds one block per overlay network: a smaller --block-prefix gives larger blocks)",
        ));
    }
    Err(Error::invalid(
        format!("network {}", net.name),
        format!("has no free address left ({} in use)", pool.size()),
        "remove containers or run 'nethook gc', or use a larger subnet",
    ))
}

/// True when `e` is `allocate` saying the pool has no free address (an overlay host then tries
/// its next block, or claims one).
pub fn is_exhausted(e: &Error) -> bool {
    e.to_string().contains("no free address left")
}

/// The run-dir lease store of one network. The caller holds the network lock.
pub struct FileLeases {
    dir: std::path::PathBuf,
}

impl FileLeases {
    pub fn open(dirs: &Dirs, net: &NetworkName) -> Result<Self> {
        let dir = dirs.leases_dir(net);
        state::ensure_dir(&dir)?;
        Ok(FileLeases { dir })
    }
    fn path(&self, ip: Ipv4Addr) -> std::path::PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Release `ip` if `id` holds it; a lease already gone, or held by someone else, is left.
    pub fn release(&self, ip: Ipv4Addr, id: &ContainerId) -> Result<()> {
        let p = self.path(ip);
        match state::read_optional(&p)? {
            Some(holder) if holder.trim() == id.as_str() => state::remove_file(&p),
            _ => Ok(()),
        }
    }

    /// Release every lease `id` holds here.
    pub fn release_all(&self, id: &ContainerId) -> Result<()> {
        for (ip, holder) in self.list()? {
            if holder == id.as_str() {
                self.release(ip, id)?;
            }
        }
        Ok(())
    }

    /// All leases: (address, holder id).
    pub fn list(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(Error::io(
                    format!("reading {}", self.dir.display()),
                    e,
                    "check the run dir",
                ))
            }
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if let Ok(ip) = name.to_string_lossy().parse::<Ipv4Addr>() {
                if let Some(h) = state::read_optional(&e.path())? {
                    out.push((ip, h.trim().to_string()));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl LeaseStore for FileLeases {
    fn claim(&mut self, ip: Ipv4Addr, id: &ContainerId) -> Result<bool> {
        let p = self.path(ip);
        match OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(mut f) => {
                f.write_all(id.as_str().as_bytes()).map_err(|e| {
                    Error::io(
                        format!("writing lease {}", p.display()),
                        e,
                        "check the run dir",
                    )
                })?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(
                format!("creating lease {}", p.display()),
                e,
                "check the run dir",
            )),
        }
    }
    fn holder(&self, ip: Ipv4Addr) -> Result<Option<String>> {
        Ok(state::read_optional(&self.path(ip))?.map(|s| s.trim().to_string()))
    }
    fn cursor(&self) -> Option<Ipv4Addr> {
        std::fs::read_to_string(self.dir.join("last"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    fn set_cursor(&mut self, ip: Ipv4Addr) -> Result<()> {
        state::atomic_write(&self.dir.join("last"), ip.to_string().as_bytes(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetworkSpec;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct MemLeases {
        held: HashMap<Ipv4Addr, String>,
        cursor: Option<Ipv4Addr>,
    }
    impl LeaseStore for MemLeases {
        fn claim(&mut self, ip: Ipv4Addr, id: &ContainerId) -> Result<bool> {
            if self.held.contains_key(&ip) {
                return Ok(false);
            }
            self.held.insert(ip, id.to_string());
            Ok(true)
        }
        fn holder(&self, ip: Ipv4Addr) -> Result<Option<String>> {
            Ok(self.held.get(&ip).cloned())
        }
        fn cursor(&self) -> Option<Ipv4Addr> {
            self.cursor
        }
        fn set_cursor(&mut self, ip: Ipv4Addr) -> Result<()> {
            self.cursor = Some(ip);
            Ok(())
        }
    }

    fn net(subnet: &str) -> Network {
        NetworkSpec {
            name: "t".into(),
            subnets: vec![subnet.into()],
            ..Default::default()
        }
        .build(None)
        .unwrap()
    }
    fn id(i: usize) -> ContainerId {
        ContainerId::new(&format!("c{i}")).unwrap()
    }

    #[test]
    fn small_subnet_exhausts_cleanly() {
        let n = net("10.0.0.0/29"); // 6 hosts, gateway .1 → 5 for containers
        let mut s = MemLeases::default();
        let got: Vec<_> = (0..5)
            .map(|i| allocate(&mut s, &n, &id(i), None).unwrap())
            .collect();
        assert_eq!(got[0], "10.0.0.2".parse::<Ipv4Addr>().unwrap());
        let e = allocate(&mut s, &n, &id(9), None).unwrap_err().to_string();
        assert!(e.contains("no free address"), "{e}");
    }

    #[test]
    fn a_full_overlay_block_says_so() {
        let n = NetworkSpec {
            name: "ov".into(),
            driver: Some("overlay".into()),
            subnets: vec!["10.200.0.0/16".into()],
            block_prefix: Some(29),
            ..Default::default()
        }
        .build(None)
        .unwrap()
        .with_block("10.200.0.8/29".parse().unwrap());
        let mut s = MemLeases::default();
        let got: Vec<_> = (0..5)
            .map(|i| allocate(&mut s, &n, &id(i), None).unwrap())
            .collect();
        assert_eq!(
            got[0],
            "10.200.0.10".parse::<Ipv4Addr>().unwrap(),
            "after the gateway .9"
        );
        let e = allocate(&mut s, &n, &id(9), None).unwrap_err().to_string();
        assert!(
            e.contains("this host's block 10.200.0.8/29 has no free address"),
            "{e}"
        );
    }

    #[test]
    fn static_requests() {
        let n = net("10.0.0.0/24");
        let mut s = MemLeases::default();
        let ip: Ipv4Addr = "10.0.0.50".parse().unwrap();
        assert_eq!(allocate(&mut s, &n, &id(1), Some(ip)).unwrap(), ip);
        let e = allocate(&mut s, &n, &id(2), Some(ip))
            .unwrap_err()
            .to_string();
        assert!(e.contains("taken by c1"), "{e}");
        for bad in ["10.0.1.5", "10.0.0.0", "10.0.0.255", "10.0.0.1"] {
            assert!(
                allocate(&mut s, &n, &id(3), Some(bad.parse().unwrap())).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn ip_range_is_honoured() {
        let mut spec = NetworkSpec {
            name: "t".into(),
            subnets: vec!["10.0.0.0/24".into()],
            ..Default::default()
        };
        spec.ip_range = Some("10.0.0.128/30".into());
        let n = spec.build(None).unwrap();
        let mut s = MemLeases::default();
        let got: Vec<_> = (0..4)
            .map(|i| allocate(&mut s, &n, &id(i), None).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.128", "10.0.0.129", "10.0.0.130", "10.0.0.131"]
        );
        assert!(allocate(&mut s, &n, &id(9), None).is_err());
    }

    #[test]
    fn released_address_is_not_reused_at_once() {
        let n = net("10.0.0.0/24");
        let mut s = MemLeases::default();
        let a = allocate(&mut s, &n, &id(1), None).unwrap();
        s.held.remove(&a);
        let b = allocate(&mut s, &n, &id(2), None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn file_store_claims_exclusively() {
        let dir = std::env::temp_dir().join(format!("nethook-ipam-{}", std::process::id()));
        let dirs = Dirs::new(dir.join("c"), dir.join("r"));
        let n = net("10.0.0.0/24");
        let mut a = FileLeases::open(&dirs, &n.name).unwrap();
        let ip1 = allocate(&mut a, &n, &id(1), None).unwrap();
        let ip2 = allocate(&mut a, &n, &id(2), None).unwrap();
        assert_ne!(ip1, ip2);
        assert_eq!(a.list().unwrap().len(), 2);
        a.release(ip1, &id(2)).unwrap(); // not the holder: kept
        assert_eq!(a.list().unwrap().len(), 2);
        a.release(ip1, &id(1)).unwrap();
        a.release(ip1, &id(1)).unwrap(); // twice is fine
        assert_eq!(a.list().unwrap(), vec![(ip2, "c2".to_string())]);
        let _ = std::fs::remove_dir_all(dir);
    }

    proptest! {
        /// Any sequence of allocations and releases: never a duplicate, never a reserved
        /// address, never outside the subnet, and released addresses come back.
        #[test]
        fn allocation_invariants(prefix in 26u8..=30, ops in proptest::collection::vec((any::<bool>(), 0usize..64), 1..200)) {
            let n = net(&format!("10.1.0.0/{prefix}"));
            let sub = n.subnet4().clone();
            let capacity = Pool::of(&n).size() as usize - 1; // minus the gateway
            let mut s = MemLeases::default();
            let mut live: HashMap<usize, Ipv4Addr> = HashMap::new();
            for (alloc, k) in ops {
                if alloc && !live.contains_key(&k) {
                    match allocate(&mut s, &n, &id(k), None) {
                        Ok(ip) => {
                            prop_assert!(is_host_address(&sub.subnet, ip));
                            prop_assert_ne!(ip, sub.gateway);
                            prop_assert!(!live.values().any(|v| *v == ip), "duplicate {}", ip);
                            live.insert(k, ip);
                        }
                        Err(_) => prop_assert_eq!(live.len(), capacity, "refused while not full"),
                    }
                } else if let Some(ip) = live.remove(&k) {
                    s.held.remove(&ip);
                }
            }
        }
    }
}
