//! The detach transaction: the attach steps undone, keyed by container id alone (at poststop
//! there is no pid and usually no namespace). Each step treats "already gone" as done, every
//! error is collected and the rest still runs, so a second detach finds nothing and succeeds.

use crate::driver::{self, Ctx, Driver};
use crate::error::Error;
use crate::error::{ErrorList, Result};
use crate::firewall::{Change, Firewall};
use crate::ipam::FileLeases;
use crate::names::{ContainerId, NetworkName};
use crate::netlink::route::RouteSocket;
use crate::publish::PortClaims;
use crate::state::endpoint::{self, Attachment, Endpoint, EpState};
use crate::state::{Dirs, Lock};

/// How to treat a host-side veth that still exists at detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkCleanup {
    /// Delete it and wait (by-hand detach, network rm, gc).
    Wait,
    /// The hook: the runtime does not need to wait on it; a detached child waits for the
    /// kernel to remove it with the namespace and deletes it only if it stays (a namespace that
    /// outlives the container, e.g. a /run/netns path in config.json).
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

/// `nethook network disconnect NETWORK ID`: one network off a running container, live.
pub fn disconnect(dirs: &Dirs, id: &ContainerId, network: &NetworkName) -> Result<()> {
    let lock = Lock::acquire(&dirs.container_lock(id))?;
    let ep = endpoint::load(dirs, id)?.ok_or_else(|| {
        Error::invalid(
            format!("container {id}"),
            "has no endpoint",
            "check 'nethook ps'",
        )
    })?;
    if !ep.attachments.iter().any(|a| &a.network == network) {
        return Err(Error::invalid(
            format!("container {id}"),
            format!("is not on network {network}"),
            "check 'nethook ps'",
        ));
    }
    let r = detach_locked(dirs, &ep, Some(network), LinkCleanup::Wait);
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
    // A record that is not ready was left by a process that died mid-way (we hold the
    // container lock, so its maker is gone): leases and port claims may have been taken that it
    // does not list yet. Release everything held by the id.
    if ep.state != EpState::Ready && only.is_none() {
        errs.note(release_everything_of(dirs, &ep.id));
    }
    if ep.attachments.is_empty() {
        // A host or none endpoint (or an empty record): nothing in the kernel to undo.
        errs.note(endpoint::remove(dirs, &ep.id));
        return errs.into_result();
    }
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
    crate::fault::point("detach.removing");

    // Firewall: expire, never delete (a delete costs an RCU grace period, 10-20 ms).
    // Ports go with the first attachment's address.
    let ports: Vec<_> = ep
        .ports
        .iter()
        .filter(|p| {
            gone.iter().any(|a| {
                std::net::IpAddr::V4(a.ipv4) == p.container_ip
                    || a.ipv6.map(std::net::IpAddr::V6) == Some(p.container_ip)
            })
        })
        .copied()
        .collect();
    let mut changes: Vec<Change> = Vec::new();
    for a in gone.iter().filter(|a| a.masquerade) {
        changes.push(Change::ExpireMasq4(a.ipv4));
        if let Some(ip6) = a.ipv6 {
            changes.push(Change::ExpireMasq6(ip6));
        }
    }
    changes.extend(ports.iter().filter_map(|p| errs.note(p.expire_change())));
    if !changes.is_empty() {
        errs.note(expire(&changes));
    }
    crate::fault::point("detach.firewall");

    // Links: at poststop the namespace is normally gone or going, and the kernel removes the
    // veth pair by itself; deleting it ourselves would cost ~30 ms the runtime does not need.
    // A macvlan child has no host side: it is deleted from inside a namespace that is still
    // the container's (by-hand detach, disconnect, a namespace that outlives the container).
    let (bridged, inside): (Vec<&Attachment>, Vec<&Attachment>) =
        gone.iter().partition(|a| a.driver.bridged());
    if !inside.is_empty() {
        if let Ok(ns) = super::attach::open_recorded_netns(ep) {
            match Ctx::open(Some(ns)) {
                Ok(ctx) => {
                    for a in &inside {
                        errs.note(driver::for_kind(a.driver).teardown(&ctx, a));
                    }
                }
                Err(e) => errs.push(e),
            }
        }
    }
    match links {
        _ if bridged.is_empty() => {}
        LinkCleanup::Wait => match Ctx::open(None) {
            Ok(ctx) => {
                for a in &bridged {
                    errs.note(driver::bridge::Bridge.teardown(&ctx, a));
                }
            }
            Err(e) => errs.push(e),
        },
        LinkCleanup::Background => {
            let names: Vec<String> = bridged
                .iter()
                .map(|a| a.host_interface.to_string())
                .collect();
            errs.note(reaper::spawn(names));
        }
    }

    crate::fault::point("detach.links");

    // Leases.
    for a in &gone {
        let r = Lock::acquire(&dirs.network_lock(&a.network)).and_then(|_l| {
            FileLeases::open(dirs, &a.network).and_then(|l| l.release(a.ipv4, &ep.id))
        });
        errs.note(r);
    }

    if !ports.is_empty() {
        let r = Lock::acquire(&dirs.ports_lock()).and_then(|_l| {
            let claims = PortClaims::open(dirs)?;
            ports.iter().try_for_each(|p| claims.release(p, &ep.id))
        });
        errs.note(r);
    }

    crate::fault::point("detach.leases");

    // The record: gone, or what is left of it.
    if kept.is_empty() {
        errs.note(endpoint::remove(dirs, &ep.id));
    } else {
        rec.attachments = kept;
        rec.ports.retain(|p| !ports.contains(p));
        rec.state = EpState::Ready;
        errs.note(endpoint::save(dirs, &rec));
    }
    // DNS: the daemon (if one runs) drops the names now the record is gone or trimmed.
    // A network file that is gone counts as DNS on: the daemon check is cheap, a lost name is not.
    let dns = gone.iter().any(|a| {
        crate::config::load(dirs, &a.network)
            .ok()
            .flatten()
            .is_none_or(|n| n.dns)
    });
    crate::dns::endpoint_changed(dirs, &ep.id, dns, crate::dns::Event::Detached);
    errs.into_result()
}

/// Every lease (on any network) and host-port claim held by `id`.
fn release_everything_of(dirs: &Dirs, id: &ContainerId) -> Result<()> {
    let mut errs = ErrorList::default();
    for net in crate::state::list_names(&dirs.run.join("leases")) {
        let Ok(net) = NetworkName::new(&net) else {
            continue;
        };
        let r = Lock::acquire(&dirs.network_lock(&net))
            .and_then(|_l| FileLeases::open(dirs, &net).and_then(|l| l.release_all(id)));
        errs.note(r);
    }
    if dirs.run.join("ports").is_dir() {
        let r = Lock::acquire(&dirs.ports_lock())
            .and_then(|_l| PortClaims::open(dirs).and_then(|c| c.release_all(id)));
        errs.note(r);
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

/// The background link reaper of the poststop hook.
mod reaper {
    use super::*;
    use nix::unistd::{fork, setsid, ForkResult};
    use std::time::{Duration, Instant};

    /// How long the kernel gets to remove a dying namespace's veth before we delete it.
    const GRACE: Duration = Duration::from_secs(2);

    /// Fork a detached grandchild that owns the cleanup, so the hook returns at once. The runtime
    /// waits for the hook's stdout/stderr to close: the child closes them, and every other fd
    /// (our locks among them) before doing anything.
    pub fn spawn(names: Vec<String>) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        // A quick look first: usually everything is already gone and no process is needed.
        let sock = RouteSocket::open()?;
        let mut left = Vec::new();
        for n in names {
            if sock.link_by_name(&n)?.is_some() {
                left.push(n);
            }
        }
        drop(sock);
        if left.is_empty() {
            return Ok(());
        }
        // SAFETY: nethook is single-threaded (current-thread runtime, no spawned threads), so the
        // child may run arbitrary code after fork.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                let _ = nix::sys::wait::waitpid(child, None);
                Ok(())
            }
            Ok(ForkResult::Child) => {
                detach_stdio();
                let _ = setsid();
                // SAFETY: as above.
                if let Ok(ForkResult::Child) = unsafe { fork() } {
                    reap(&left);
                }
                // SAFETY: leave without running the parent's destructors or atexit handlers.
                unsafe { libc::_exit(0) }
            }
            Err(e) => Err(crate::error::Error::kernel(
                "forking the link reaper",
                e.desc(),
                "check the process limits",
            )),
        }
    }

    fn detach_stdio() {
        // SAFETY: plain fd syscalls on fds this process owns.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        }
    }

    fn reap(names: &[String]) {
        let Ok(sock) = RouteSocket::open() else {
            return;
        };
        let start = Instant::now();
        loop {
            let left: Vec<&String> = names
                .iter()
                .filter(|n| matches!(sock.link_by_name(n), Ok(Some(_))))
                .collect();
            if left.is_empty() {
                return;
            }
            if start.elapsed() >= GRACE {
                for n in left {
                    let _ = sock.delete_link_by_name(n);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
