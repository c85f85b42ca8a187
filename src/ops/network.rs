//! Network lifecycle: create (with the default network made on first use), remove.

use crate::config::{self, Network, NetworkSpec, DEFAULT_NETWORK};
use crate::error::{Error, Result};
use crate::firewall::Firewall;
use crate::names::NetworkName;
use crate::netlink::route::RouteSocket;
use crate::state::{endpoint, Dirs, Lock};
use ipnet::Ipv4Net;

/// True when `net` overlaps an address or a non-default route of the host.
fn overlaps_host(net: &Ipv4Net, host: &RouteSocket) -> Result<bool> {
    for a in host.addrs4()? {
        if a.addr.is_loopback() {
            continue;
        }
        let theirs = Ipv4Net::new(a.addr, a.prefix_len)
            .map(|n| n.trunc())
            .unwrap_or_default();
        if net.contains(&a.addr) || theirs.contains(&net.network()) {
            return Ok(true);
        }
    }
    for r in host.routes4()? {
        if r.prefix_len == 0 {
            continue;
        }
        if let Ok(theirs) = Ipv4Net::new(r.dst, r.prefix_len) {
            if net.contains(&theirs.network()) || theirs.contains(&net.network()) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn overlaps_networks(net: &Ipv4Net, existing: &[Network]) -> bool {
    existing
        .iter()
        .flat_map(|n| n.subnets.iter())
        .any(|s| s.subnet.contains(&net.network()) || net.contains(&s.subnet.network()))
}

/// The default network's subnet: 10.89.0.0/16 unless the host or another network uses it, then
/// the next free /16 of 10.90-10.127.
fn pick_default_subnet(host: &RouteSocket, existing: &[Network]) -> Result<Ipv4Net> {
    for second in std::iter::once(89u8).chain(90..=127) {
        let cand = Ipv4Net::new(std::net::Ipv4Addr::new(10, second, 0, 0), 16).expect("valid /16");
        if !overlaps_networks(&cand, existing) && !overlaps_host(&cand, host)? {
            return Ok(cand);
        }
    }
    Err(Error::invalid(
        "default network nethook",
        "every /16 of 10.89-10.127 overlaps the host's addresses or routes",
        "create it by hand: nethook network create nethook --subnet CIDR",
    ))
}

/// Create a network from a spec. Subnet-less creation picks a free /16 like the default network.
pub fn create(dirs: &Dirs, spec: &NetworkSpec, host: Option<&RouteSocket>) -> Result<Network> {
    let _lock = Lock::acquire(&dirs.config_lock())?;
    let existing = config::list(dirs)?;
    let driver = spec.driver.as_deref().unwrap_or("bridge");
    let no_v4 = spec.subnets.iter().all(|s| s.contains(':'));
    let auto = match (no_v4 && driver == "bridge", host) {
        (true, Some(h)) => Some(pick_default_subnet(h, &existing)?),
        _ => None,
    };
    let mut net = spec.build(auto)?;
    config::check_conflicts(&net, &existing)?;
    if let Some(h) = host {
        check_against_host(&mut net, h)?;
    }
    if net.driver == config::DriverKind::Overlay {
        // The definition lives in etcd: creating it on one host makes it known to all.
        crate::cluster::create_network(&mut net, dirs, host)?;
    }
    config::save(dirs, &net)?;
    Ok(net)
}

/// What only the kernel can tell: a macvlan parent exists and carries the MTU asked for; a
/// bridge network without an MTU gets that of the host's default-route interface (as netavark
/// does), so containers behind a tunnel or a jumbo-frame uplink fit it.
fn check_against_host(net: &mut Network, host: &RouteSocket) -> Result<()> {
    match net.driver {
        config::DriverKind::Macvlan => {
            let parent = net.parent.as_ref().expect("macvlan networks have a parent");
            let l = host.link_by_name(parent.as_str())?.ok_or_else(|| {
                Error::invalid(
                    format!("parent {parent}"),
                    "does not exist on this host",
                    "give an existing interface (see 'ip link')",
                )
            })?;
            if l.name.starts_with("nh") && l.kind.as_deref() == Some("veth") {
                return Err(Error::invalid(
                    format!("parent {parent}"),
                    "is the host side of a nethook container's veth",
                    "give the host interface of the containers' segment",
                ));
            }
            if let (Some(m), Some(p)) = (net.mtu, l.mtu) {
                if m > p {
                    return Err(Error::invalid(
                        format!("mtu {m}"),
                        format!("is above the MTU of parent {parent} ({p})"),
                        format!("give an MTU of at most {p}, or leave it out to use the parent's"),
                    ));
                }
            }
        }
        config::DriverKind::Bridge if net.mtu.is_none() => {
            net.mtu = host.default_route_mtu()?.filter(|m| *m != 1500);
            if let Some(m) = net.mtu {
                if net.subnet6().is_some() && m < config::MIN_MTU_IPV6 {
                    net.mtu = None;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Load a network; the default one is created on first use.
pub fn load_or_default(dirs: &Dirs, name: &NetworkName, host: &RouteSocket) -> Result<Network> {
    if let Some(n) = config::load(dirs, name)? {
        return Ok(n);
    }
    if name.as_str() != DEFAULT_NETWORK {
        return config::load_existing(dirs, name);
    }
    let spec = NetworkSpec {
        name: DEFAULT_NETWORK.into(),
        ..Default::default()
    };
    match create(dirs, &spec, Some(host)) {
        Ok(n) => Ok(n),
        // A concurrent hook made it first.
        Err(_) if config::load(dirs, name)?.is_some() => config::load_existing(dirs, name),
        Err(e) => Err(e),
    }
}

/// Remove a network: refused while endpoints use it unless `force`, in which case they are
/// detached first. The bridge and the network's firewall elements go too.
pub fn remove(dirs: &Dirs, name: &NetworkName, force: bool) -> Result<()> {
    let net = config::load_existing(dirs, name)?;
    let users: Vec<_> = endpoint::list(dirs)?
        .into_iter()
        .filter(|e| e.attachments.iter().any(|a| &a.network == name))
        .collect();
    if !users.is_empty() && !force {
        let ids: Vec<&str> = users.iter().map(|e| e.id.as_str()).collect();
        return Err(Error::invalid(
            format!("network {name}"),
            format!("is in use by {} endpoint(s): {}", ids.len(), ids.join(", ")),
            "stop those containers, or use --force to detach them",
        ));
    }
    for ep in &users {
        super::detach::detach(dirs, &ep.id, Some(name), super::detach::LinkCleanup::Wait)?;
    }
    let _lock = Lock::acquire(&dirs.config_lock())?;
    let host = RouteSocket::open()?;
    if let Some(b) = &net.bridge {
        host.delete_link_by_name(b.as_str())?;
    }
    let mut fw = Firewall::open()?;
    if fw.table_exists()? {
        // Each element on its own: one already missing must not keep the others.
        for c in super::firewall_sync::network_removals(&net) {
            let _ = fw.apply(&[c]);
        }
    }
    config::remove(dirs, name)?;
    let _ = std::fs::remove_dir_all(dirs.leases_dir(name));
    Ok(())
}
