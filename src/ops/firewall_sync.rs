//! Bringing the nftables table in line with the records: after the table was created afresh
//! (first use, reboot, a flush), every network's and endpoint's elements are added again.

use crate::config;
use crate::error::Result;
use crate::firewall::{Change, Firewall};
use crate::state::{endpoint, Dirs, Lock};

/// The per-network elements of every configured network whose bridge is in use.
pub fn network_changes(net: &config::Network) -> Vec<Change> {
    // Only bridge networks have elements: macvlan traffic never passes this host's stack.
    let Some(bridge) = net.bridge.as_ref().map(|b| b.to_string()) else {
        return Vec::new();
    };
    let mut v = vec![
        Change::AddBridge(bridge.clone()),
        // Overlay: the whole cluster subnet, so traffic to other hosts' containers is not
        // masqueraded.
        Change::AddNet4(
            net.overlay
                .as_ref()
                .map_or(net.subnet4().subnet, |o| o.subnet),
        ),
        Change::AddIntra {
            bridge: bridge.clone(),
            icc: net.icc,
        },
    ];
    v.extend(network_changes_v6(
        &net.subnets6.iter().map(|s| s.subnet).collect::<Vec<_>>(),
    ));
    if net.internal {
        v.push(Change::AddInternal(bridge.clone()));
    }
    for (proto, port) in net.host_ports() {
        v.push(Change::AllowHostPort {
            bridge: bridge.clone(),
            proto,
            port,
        });
    }
    v
}

/// The same, undone (network rm): real deletes, off the hot path.
pub fn network_removals(net: &config::Network) -> Vec<Change> {
    network_changes(net)
        .into_iter()
        .map(|c| match c {
            Change::AddBridge(b) => Change::RemoveBridge(b),
            Change::AddNet4(n) => Change::RemoveNet4(n),
            Change::AddNet6(n) => Change::RemoveNet6(n),
            Change::AddIntra { bridge, icc } => Change::RemoveIntra { bridge, icc },
            Change::AddInternal(b) => Change::RemoveInternal(b),
            Change::AllowHostPort {
                bridge,
                proto,
                port,
            } => Change::RemoveHostPort {
                bridge,
                proto,
                port,
            },
            other => other,
        })
        .collect()
}

/// Make sure the base table exists; if it had to be created, re-add every element the records
/// call for. Creation is serialised by a lock so two hooks never both build the table.
pub fn ensure_table(dirs: &Dirs, fw: &mut Firewall) -> Result<()> {
    // One GETTABLE on the hot path; an absent table or an older layout goes the slow way.
    if fw.layout_version()? == Some(crate::firewall::LAYOUT_VERSION) {
        return Ok(());
    }
    let _lock = Lock::acquire(&dirs.firewall_lock())?;
    if fw.ensure_base()? {
        resync(dirs, fw)?;
    }
    Ok(())
}

/// Add the elements of every network and endpoint (adds are idempotent).
pub fn resync(dirs: &Dirs, fw: &mut Firewall) -> Result<()> {
    let mut changes = Vec::new();
    for net in config::list(dirs)? {
        changes.extend(network_changes(&net));
    }
    for ep in endpoint::list(dirs)? {
        for a in &ep.attachments {
            if a.masquerade {
                changes.push(Change::AddMasq4(a.ipv4));
                if let Some(ip6) = a.ipv6 {
                    changes.push(Change::AddMasq6(ip6));
                }
            }
        }
        for p in &ep.ports {
            changes.push(p.add_change()?);
        }
    }
    fw.apply(&changes)?;
    Ok(())
}

/// The per-network elements of a network's IPv6 subnets (beside `network_changes`, whose
/// bridge, intra, internal and host_allow elements serve both families).
pub fn network_changes_v6(subnets: &[ipnet::Ipv6Net]) -> Vec<Change> {
    subnets.iter().map(|s| Change::AddNet6(*s)).collect()
}

/// The same, undone (network rm).
pub fn network_removals_v6(subnets: &[ipnet::Ipv6Net]) -> Vec<Change> {
    subnets.iter().map(|s| Change::RemoveNet6(*s)).collect()
}
