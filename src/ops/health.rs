//! `check`, `gc` and `restore`: the records compared with the kernel, and brought back in line.

use crate::config;
use crate::driver::bridge::ensure_bridge;
use crate::error::Result;
use crate::firewall::{Firewall, Snapshot};
use crate::ipam::FileLeases;
use crate::netlink::route::RouteSocket;
use crate::state::endpoint::{self, Endpoint, EpState};
use crate::state::{Dirs, Lock};

/// What is wrong with one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub id: String,
    pub problem: String,
    /// True when `gc` would release the endpoint.
    pub collectable: bool,
}

/// Look at every endpoint (or one) against the kernel and the lease files; changes nothing.
pub fn check(dirs: &Dirs, only: Option<&str>) -> Result<Vec<Finding>> {
    let host = RouteSocket::open()?;
    let eps = endpoint::list(dirs)?;
    // Only bridge attachments have elements (macvlan, host and none endpoints need no table).
    let needs_table = eps.iter().any(|e| {
        e.attachments
            .iter()
            .any(|a| a.driver == config::DriverKind::Bridge)
    });
    let snap = if needs_table {
        Firewall::open()?.snapshot()?
    } else {
        None
    };
    let mut out = Vec::new();
    if needs_table && snap.is_none() {
        out.push(Finding {
            id: "-".into(),
            problem: "nftables table inet nethook is missing; run 'nethook restore'".into(),
            collectable: false,
        });
    }
    for ep in &eps {
        if only.is_some_and(|o| o != ep.id.as_str()) {
            continue;
        }
        let found = check_one(dirs, &host, ep)?;
        let gone = found.iter().any(|f| f.collectable);
        out.extend(found);
        if let (Some(s), false) = (&snap, gone) {
            out.extend(check_firewall(s, ep));
        }
    }
    Ok(out)
}

/// The endpoint's nftables elements against what the kernel holds.
fn check_firewall(s: &Snapshot, ep: &Endpoint) -> Vec<Finding> {
    let mut f = Vec::new();
    let mut push = |problem: String| {
        f.push(Finding {
            id: ep.id.to_string(),
            problem,
            collectable: false,
        })
    };
    for a in &ep.attachments {
        if let Some(ip6) = a.ipv6.filter(|ip| a.masquerade && !s.masq6.contains(ip)) {
            push(format!(
                "masquerade element for {ip6} is missing from set masq6; run 'nethook restore'"
            ));
        }
        if a.masquerade && !s.masq4.contains(&a.ipv4) {
            push(format!(
                "masquerade element for {} is missing from set masq4; run 'nethook restore'",
                a.ipv4
            ));
        }
    }
    for p in &ep.ports {
        if !p.in_snapshot(s) {
            push(format!(
                "forward {p} is missing from the nftables maps; run 'nethook restore'"
            ));
        }
    }
    f
}

fn check_one(dirs: &Dirs, host: &RouteSocket, ep: &Endpoint) -> Result<Vec<Finding>> {
    let mut f = Vec::new();
    let mut push = |problem: String, collectable: bool| {
        f.push(Finding {
            id: ep.id.to_string(),
            problem,
            collectable,
        })
    };
    if ep.state != EpState::Ready && !super::pid_alive(ep.pid) {
        push(
            format!(
                "half-made: state {} and its nethook process {} is gone",
                ep.state, ep.pid
            ),
            true,
        );
        return Ok(f);
    }
    // The container's process, when recorded (the hook): gone means the container is, even
    // when nothing in the kernel shows it (host network, a namespace kept by a bind mount).
    if let Some(c) = ep
        .container
        .filter(|c| ep.state == EpState::Ready && !c.alive())
    {
        push(
            format!("container process {} is gone (container gone)", c.pid),
            true,
        );
        return Ok(f);
    }
    // Namespaces that went away without a poststop (macvlan and none endpoints have no host
    // link to tell it by).
    let needs_netns = ep
        .attachments
        .iter()
        .any(|a| a.driver == crate::config::DriverKind::Macvlan)
        || (ep.netmode.is_some() && ep.netns_id.is_some());
    if needs_netns && super::attach::open_recorded_netns(ep).is_err() {
        push(
            format!("namespace {} is gone (container gone)", ep.netns),
            true,
        );
        return Ok(f);
    }
    for a in &ep.attachments {
        if !a.driver.bridged() {
            continue;
        }
        match host.link_by_name(a.host_interface.as_str())? {
            None => push(
                format!(
                    "host link {} of network {} is gone (container gone)",
                    a.host_interface, a.network
                ),
                true,
            ),
            Some(l) => {
                if !l.up {
                    push(format!("host link {} is down", a.host_interface), false);
                }
                let bridge = config::load(dirs, &a.network)?
                    .and_then(|n| n.bridge)
                    .and_then(|b| host.link_by_name(b.as_str()).ok().flatten());
                match bridge {
                    None => push(
                        format!(
                            "bridge of network {} is missing; run 'nethook restore'",
                            a.network
                        ),
                        false,
                    ),
                    Some(b) if l.controller != Some(b.index) => push(
                        format!(
                            "host link {} is not on the bridge of network {}",
                            a.host_interface, a.network
                        ),
                        false,
                    ),
                    _ => {}
                }
            }
        }
        let leases = FileLeases::open(dirs, &a.network)?.list()?;
        if !leases
            .iter()
            .any(|(ip, id)| *ip == a.ipv4 && id == ep.id.as_str())
        {
            push(
                format!("lease of {} on network {} is missing", a.ipv4, a.network),
                false,
            );
        }
    }
    Ok(f)
}

/// Release every endpoint `check` calls collectable. Returns what was (or, dry, would be) released.
pub fn gc(dirs: &Dirs, dry_run: bool) -> Result<Vec<Finding>> {
    let found: Vec<Finding> = check(dirs, None)?
        .into_iter()
        .filter(|f| f.collectable)
        .collect();
    if !dry_run {
        let mut seen = std::collections::BTreeSet::new();
        for f in &found {
            if seen.insert(f.id.clone()) {
                let id = crate::names::ContainerId::new(&f.id)?;
                super::detach::detach(dirs, &id, None, super::detach::LinkCleanup::Wait)?;
            }
        }
        // Leases whose holder has no record (a crash between lease and record).
        for net in config::list(dirs)? {
            let _l = Lock::acquire(&dirs.network_lock(&net.name))?;
            let leases = FileLeases::open(dirs, &net.name)?;
            for (ip, holder) in leases.list()? {
                let Ok(id) = crate::names::ContainerId::new(&holder) else {
                    continue;
                };
                if endpoint::load(dirs, &id)?.is_none() {
                    leases.release(ip, &id)?;
                }
            }
        }
    }
    Ok(found)
}

/// Re-create what a reboot or a firewall flush took: bridges of networks in use, the nftables
/// table and every element the records call for.
pub fn restore(dirs: &Dirs) -> Result<()> {
    let host = RouteSocket::open()?;
    // Every bridge network's bridge, in use or not: after a reboot none is in use yet, and the
    // containers started again expect their networks as they were.
    for net in config::list(dirs)? {
        if net.driver == config::DriverKind::Bridge {
            let _l = Lock::acquire(&dirs.network_lock(&net.name))?;
            ensure_bridge(&host, &net)?;
        }
    }
    let mut fw = Firewall::open()?;
    let _l = Lock::acquire(&dirs.firewall_lock())?;
    fw.ensure_base()?;
    super::firewall_sync::resync(dirs, &mut fw)?;
    crate::dns::ensure_running(dirs)
}
