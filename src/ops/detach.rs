//! The detach transaction: the attach steps undone, keyed by container id alone (at poststop
//! there is no pid and usually no namespace). Each step treats "already gone" as done, every
//! error is collected and the rest still runs, so a second detach finds nothing and succeeds.

use crate::driver::{self, Ctx, Driver};
use crate::error::{ErrorList, Result};
use crate::firewall::{Change, Firewall};
use crate::ipam::FileLeases;
use crate::names::{ContainerId, NetworkName};
use crate::state::endpoint::{self, Endpoint, EpState};
use crate::state::{Dirs, Lock};

/// How to treat a host-side veth that still exists at detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkCleanup {
    /// Delete it and wait (by-hand detach, network rm, gc).
    Wait,
    /// The hook: the runtime does not need to wait on it (see `Detach::links`).
    Background,
}

/// Detach container `id` from `only` (one network) or from all its networks.
pub fn detach(
    dirs: &Dirs,
    id: &ContainerId,
    only: Option<&NetworkName>,
    links: LinkCleanup,
) -> Result<()> {
    let lock = Lock::acquire(&dirs.container_lock(id))?;
    let Some(ep) = endpoint::load(dirs, id)? else {
        lock.release_and_remove();
        return Ok(());
    };
    let r = detach_locked(dirs, &ep, only, links);
    if endpoint::load(dirs, id).ok().flatten().is_none() {
        lock.release_and_remove();
    }
    r
}

/// Detach with the container lock already held.
pub fn detach_locked(
    dirs: &Dirs,
    ep: &Endpoint,
    only: Option<&NetworkName>,
    links: LinkCleanup,
) -> Result<()> {
    let mut errs = ErrorList::default();
    let (gone, kept): (Vec<_>, Vec<_>) = ep
        .attachments
        .iter()
        .cloned()
        .partition(|a| only.is_none_or(|n| &a.network == n));
    if gone.is_empty() {
        return Ok(());
    }
    let mut rec = ep.clone();
    rec.state = EpState::Removing;
    rec.pid = std::process::id();
    errs.note(endpoint::save(dirs, &rec));

    // Firewall: expire, never delete (a delete costs an RCU grace period, 10-20 ms).
    let masq: Vec<Change> = gone
        .iter()
        .filter(|a| a.masquerade)
        .map(|a| Change::ExpireMasq4(a.ipv4))
        .collect();
    if !masq.is_empty() {
        errs.note(expire(&masq));
    }

    // Links: at poststop the namespace is normally gone and the kernel removes the veth pair by
    // itself; only a link still there is deleted.
    match Ctx::open(None) {
        Ok(ctx) => {
            for a in &gone {
                let _ = links;
                errs.note(driver::bridge::Bridge.teardown(&ctx, a));
            }
        }
        Err(e) => errs.push(e),
    }

    // Leases.
    for a in &gone {
        let r = Lock::acquire(&dirs.network_lock(&a.network)).and_then(|_l| {
            FileLeases::open(dirs, &a.network).and_then(|l| l.release(a.ipv4, &ep.id))
        });
        errs.note(r);
    }

    // The record: gone, or what is left of it.
    if kept.is_empty() {
        errs.note(endpoint::remove(dirs, &ep.id));
    } else {
        rec.attachments = kept;
        rec.state = EpState::Ready;
        errs.note(endpoint::save(dirs, &rec));
    }
    errs.into_result()
}

pub fn expire(changes: &[Change]) -> Result<()> {
    let mut fw = Firewall::open()?;
    if !fw.table_exists()? {
        // Table gone (flushed, never made): nothing to expire.
        return Ok(());
    }
    fw.apply(changes)?;
    Ok(())
}
