//! Bringing the nftables table in line with the records: after the table was created afresh
//! (first use, reboot, a flush), every network's and endpoint's elements are added again.

use crate::config;
use crate::error::Result;
use crate::firewall::{Change, Firewall};
use crate::state::{endpoint, Dirs, Lock};

/// The per-network elements of every configured network whose bridge is in use.
pub fn network_changes(net: &config::Network) -> Vec<Change> {
    vec![
        Change::AddBridge(net.bridge.to_string()),
        Change::AddNet4(net.subnet4().subnet),
    ]
}

/// Make sure the base table exists; if it had to be created, re-add every element the records
/// call for. Creation is serialised by a lock so two hooks never both build the table.
pub fn ensure_table(dirs: &Dirs, fw: &mut Firewall) -> Result<()> {
    if fw.table_exists()? {
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
            }
        }
    }
    fw.apply(&changes)?;
    Ok(())
}
