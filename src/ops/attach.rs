//! The attach transaction (DESIGN.md section 1): addresses and the endpoint record first, then
//! links, firewall elements and files; any failure undoes everything done so far, in reverse.

use crate::config::Network;
use crate::driver::{self, Ctx, Made};
use crate::error::{Error, ErrorList, Result};
use crate::firewall::{Change, Firewall};
use crate::ipam::{self, FileLeases};
use crate::names::{host_ifname, ContainerId, IfName, Mac, NetworkName};
use crate::netns::Netns;
use crate::oci::Wants;
use crate::publish::{self, PortClaims, PublishSpec, Published};
use crate::rootfs::{self, EtcFiles, Target};
use crate::state::endpoint::{self, Attachment, Endpoint, EpState};
use crate::state::{Dirs, Lock};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// Where the container's /etc files go.
#[derive(Debug, Clone)]
pub struct FilesPlan {
    pub hosts: Target,
    pub hostname: Target,
    pub resolv: Target,
}

#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub id: ContainerId,
    pub netns: PathBuf,
    pub hostname: String,
    pub wants: Wants,
    /// Name of the first interface inside the namespace (eth0 unless given).
    pub ifname: Option<IfName>,
    pub files: Option<FilesPlan>,
    pub source: &'static str,
}

/// Things done so far, undone in reverse on failure.
enum Undo {
    Lease(NetworkName, Ipv4Addr),
    Ports(Vec<Published>),
    Forwards(Vec<Published>),
    Record,
    Links(Vec<Made>),
    Masq(Vec<Ipv4Addr>),
}

pub fn attach(dirs: &Dirs, req: &AttachRequest) -> Result<Endpoint> {
    let ctr = Lock::acquire(&dirs.container_lock(&req.id))?;
    let r = attach_locked(dirs, req);
    // No record left (failed and rolled back): the lock file goes too, nothing piles up.
    if r.is_err() && endpoint::load(dirs, &req.id).ok().flatten().is_none() {
        ctr.release_and_remove();
    }
    r
}

fn attach_locked(dirs: &Dirs, req: &AttachRequest) -> Result<Endpoint> {
    if let Some(old) = endpoint::load(dirs, &req.id)? {
        let half_made = old.state != EpState::Ready && !super::pid_alive(old.pid);
        if !half_made {
            return Err(Error::invalid(
                format!("container {}", req.id),
                format!("already has an endpoint ({})", old.state),
                format!("run 'nethook detach {}' first", req.id),
            ));
        }
        // A crashed earlier attach of the same id: clear it before starting again.
        super::detach::detach_locked(dirs, &old, None, super::detach::LinkCleanup::Wait)?;
    }
    // Everything that can be checked without changing anything, first.
    let specs: Vec<(PublishSpec, &str)> = req
        .wants
        .publish
        .iter()
        .map(|raw| publish::parse(raw).map(|s| (s, raw.as_str())))
        .collect::<Result<_>>()?;
    let ns = Netns::open(&req.netns)?;
    let netns_id = ns.id()?;
    let ctx = Ctx::open(Some(ns))?;
    let mut nets = Vec::new();
    for name in &req.wants.networks {
        nets.push(super::network::load_or_default(dirs, name, &ctx.host)?);
    }
    if specs.iter().any(|(s, _)| s.host_ip.is_some()) {
        let mut host_addrs: Vec<IpAddr> = ctx
            .host
            .addrs4()?
            .into_iter()
            .map(|a| IpAddr::V4(a.addr))
            .collect();
        // The gateways of the networks being joined are the host's too, even when this attach
        // is about to create their bridge.
        host_addrs.extend(nets.iter().map(|n| IpAddr::V4(n.subnet4().gateway)));
        for (s, raw) in &specs {
            if let Some(ip) = s
                .host_ip
                .filter(|ip| !ip.is_unspecified() && !host_addrs.contains(ip))
            {
                return Err(Error::invalid(
                    format!("publish {raw}"),
                    format!("host address {ip} is not an address of this host"),
                    "use one of the host's addresses, or leave it out to publish on all",
                ));
            }
        }
    }
    let first_if = match &req.ifname {
        Some(i) => i.clone(),
        None => IfName::new("eth0")?,
    };

    let mut undo: Vec<Undo> = Vec::new();
    let plan = Plan {
        nets: &nets,
        specs: &specs,
        first_if: &first_if,
        netns_id,
    };
    let result = run(dirs, req, &ctx, &plan, &mut undo);
    match result {
        Ok(ep) => Ok(ep),
        Err(e) => {
            let errs = rollback(dirs, &req.id, &ctx, undo);
            if errs.0.is_empty() {
                Err(e)
            } else {
                let mut all = ErrorList(vec![e]);
                all.0.extend(errs.0);
                Err(Error::List(all))
            }
        }
    }
}

/// What the checks before the transaction resolved.
struct Plan<'a> {
    nets: &'a [Network],
    specs: &'a [(PublishSpec, &'a str)],
    first_if: &'a IfName,
    netns_id: crate::state::endpoint::NetnsId,
}

fn run(
    dirs: &Dirs,
    req: &AttachRequest,
    ctx: &Ctx,
    plan: &Plan<'_>,
    undo: &mut Vec<Undo>,
) -> Result<Endpoint> {
    let Plan {
        nets,
        specs,
        first_if,
        netns_id,
    } = *plan;
    // 1. Addresses, under each network's lock, and the record: intent before any kernel change.
    let mut atts = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        let ip = {
            let _l = Lock::acquire(&dirs.network_lock(&net.name))?;
            let mut leases = FileLeases::open(dirs, &net.name)?;
            ipam::allocate(
                &mut leases,
                net,
                &req.id,
                req.wants.ips.get(&net.name).copied(),
            )?
        };
        undo.push(Undo::Lease(net.name.clone(), ip));
        let interface = if i == 0 {
            first_if.clone()
        } else {
            IfName::new(&format!("eth{i}"))?
        };
        let mac = match (i, req.wants.mac) {
            (0, Some(m)) => m,
            _ => Mac::from_ipv4(ip),
        };
        let s = net.subnet4();
        atts.push(Attachment {
            network: net.name.clone(),
            interface,
            host_interface: host_ifname(&net.name, &req.id),
            ipv4: ip,
            prefix_len: s.subnet.prefix_len(),
            gateway: s.gateway,
            mac,
            masquerade: net.masquerade,
        });
    }
    // Host ports, under the ports lock: a clash is refused here, before any kernel change.
    let mut ports = Vec::new();
    if !specs.is_empty() {
        let _l = Lock::acquire(&dirs.ports_lock())?;
        let claims = PortClaims::open(dirs)?;
        let target = atts[0].ipv4;
        for (spec, raw) in specs {
            let targets = spec.targets(&[IpAddr::V4(target)], raw)?;
            let pairs = claims.claim(spec, &req.id, raw)?;
            let got: Vec<Published> = spec.published(&pairs, &targets);
            undo.push(Undo::Ports(got.clone()));
            ports.extend(got);
        }
    }
    let mut ep = Endpoint {
        id: req.id.clone(),
        state: EpState::Creating,
        pid: std::process::id(),
        netns: req.netns.display().to_string(),
        netns_id: Some(netns_id),
        hostname: req.hostname.clone(),
        aliases: req.wants.aliases.clone(),
        files: Vec::new(),
        source: req.source.to_string(),
        attachments: atts,
        ports,
        created: super::now(),
    };
    endpoint::save(dirs, &ep)?;
    undo.push(Undo::Record);

    // 2. Links.
    let mut bridges_made = Vec::new();
    for (i, (net, att)) in nets.iter().zip(&ep.attachments).enumerate() {
        let bridge = {
            let _l = Lock::acquire(&dirs.network_lock(&net.name))?;
            let (index, created) = driver::bridge::ensure_bridge(&ctx.host, net)?;
            if created {
                bridges_made.push(net);
            }
            index
        };
        let mut made = Vec::new();
        let r = driver::for_network(net).setup(ctx, net, bridge, att, i == 0, &mut made);
        undo.push(Undo::Links(made));
        r?;
        if i == 0 && !ep.ports.is_empty() {
            driver::bridge::prepare_publish(ctx, net, att)?;
        }
    }

    // 3. Firewall: one batch of element adds.
    let mut fw = Firewall::open()?;
    super::firewall_sync::ensure_table(dirs, &mut fw)?;
    let mut changes = Vec::new();
    for net in bridges_made {
        changes.extend(super::firewall_sync::network_changes(net));
    }
    let masq: Vec<Ipv4Addr> = ep
        .attachments
        .iter()
        .filter(|a| a.masquerade)
        .map(|a| a.ipv4)
        .collect();
    changes.extend(masq.iter().map(|ip| Change::AddMasq4(*ip)));
    for p in &ep.ports {
        changes.push(p.add_change()?);
    }
    fw.apply(&changes)?;
    undo.push(Undo::Masq(masq));
    undo.push(Undo::Forwards(ep.ports.clone()));

    // 4. Files in the container.
    if let Some(plan) = &req.files {
        let (mut nameservers, search, options) = rootfs::host_resolvers();
        // DNS (src/dns): the first DNS-enabled network's gateway answers names, forwards the rest.
        if let Some(gw) = crate::dns::nameserver(nets) {
            nameservers = vec![gw];
        }
        let files = EtcFiles {
            hostname: req.hostname.clone(),
            aliases: req.wants.aliases.clone(),
            addrs: ep.attachments.iter().map(|a| a.ipv4).collect(),
            nameservers,
            search,
            options,
        };
        rootfs::write(&plan.hosts, &files.hosts())?;
        rootfs::write(&plan.hostname, &files.hostname_file())?;
        rootfs::write(&plan.resolv, &files.resolv_conf())?;
        ep.files = vec![
            plan.hosts.host_path(),
            plan.hostname.host_path(),
            plan.resolv.host_path(),
        ];
    }

    // 5. Done.
    ep.state = EpState::Ready;
    endpoint::save(dirs, &ep)?;
    // DNS: the daemon reloads, or starts for a first DNS-enabled endpoint (never fails attach).
    crate::dns::endpoint_changed(
        dirs,
        &req.id,
        nets.iter().any(|n| n.dns),
        crate::dns::Event::Attached,
    );
    Ok(ep)
}

fn rollback(dirs: &Dirs, id: &ContainerId, ctx: &Ctx, undo: Vec<Undo>) -> ErrorList {
    let mut errs = ErrorList::default();
    for step in undo.into_iter().rev() {
        match step {
            Undo::Masq(ips) if !ips.is_empty() => {
                let changes: Vec<Change> = ips.into_iter().map(Change::ExpireMasq4).collect();
                errs.note(super::detach::expire(&changes));
            }
            Undo::Masq(_) => {}
            Undo::Forwards(ps) if !ps.is_empty() => {
                let changes: Vec<Change> = ps
                    .iter()
                    .map(Published::expire_change)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .filter_map(|c| errs.note(c))
                    .collect();
                errs.note(super::detach::expire(&changes));
            }
            Undo::Forwards(_) => {}
            Undo::Ports(ps) => {
                let _l = Lock::acquire(&dirs.ports_lock());
                for p in ps {
                    errs.note(PortClaims::open(dirs).and_then(|c| c.release(&p, id)));
                }
            }
            Undo::Links(made) => {
                for m in made {
                    match m {
                        Made::HostLink(name) => {
                            errs.note(ctx.host.delete_link_by_name(&name));
                        }
                    }
                }
            }
            Undo::Record => {
                errs.note(endpoint::remove(dirs, id));
            }
            Undo::Lease(net, ip) => {
                let _l = Lock::acquire(&dirs.network_lock(&net));
                errs.note(FileLeases::open(dirs, &net).and_then(|l| l.release(ip, id)));
            }
        }
    }
    errs
}
