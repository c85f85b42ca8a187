//! The attach transaction (DESIGN.md section 1): addresses and the endpoint record first, then
//! links, firewall elements and files; any failure undoes everything done so far, in reverse.

use crate::config::{DriverKind, Network};
use crate::driver::{self, Ctx, Made};
use crate::error::{Error, ErrorList, Result};
use crate::firewall::{Change, Firewall};
use crate::ipam::FileLeases;
use crate::names::{host_ifname, ContainerId, IfName, Mac, NetworkName};
use crate::netlink::route::RouteSocket;
use crate::netns::Netns;
use crate::oci::Wants;
use crate::publish::{self, PortClaims, PublishSpec, Published};
use crate::rootfs::{self, EtcFiles, Target};
use crate::state::endpoint::{self, Attachment, Endpoint, EpState};
use crate::state::proc::ProcId;
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
    /// The namespace, already opened and checked (setuid mode): used instead of opening
    /// `netns` again, so the path cannot be swapped between the check and the use.
    pub pinned: Option<std::sync::Arc<Netns>>,
    /// The real uid of a setuid caller, recorded in the endpoint.
    pub owner: Option<u32>,
    /// The container's process (the hook's OCI state pid), recorded with its start time.
    pub container_pid: Option<u32>,
}

impl AttachRequest {
    /// The request's namespace: the pinned one, else opened by path.
    fn open_netns(&self) -> Result<Netns> {
        match &self.pinned {
            Some(ns) => ns.try_clone(),
            None => Netns::open(&self.netns),
        }
    }
}

/// Things done so far, undone in reverse on failure.
enum Undo {
    Lease(NetworkName, Ipv4Addr),
    Ports(Vec<Published>),
    Forwards(Vec<Published>),
    /// The record did not exist before: remove it.
    Record,
    /// The record existed (network connect): put this version back.
    RecordWas(Box<Endpoint>),
    Links(Vec<Made>),
    Masq(Vec<Change>),
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

/// Clear a record of the same id left by a crashed attach; refuse a live one.
fn clear_stale(dirs: &Dirs, id: &ContainerId) -> Result<()> {
    if let Some(old) = endpoint::load(dirs, id)? {
        let half_made = old.state != EpState::Ready && !super::pid_alive(old.pid);
        if !half_made && old.source == "cni" && old.state == EpState::Ready {
            return Err(Error::invalid(
                format!("container {id}"),
                "is already networked by nethook's CNI plugin (its conflist)",
                "a container is networked by the nethook hook or by CNI, not both: remove one",
            ));
        }
        if !half_made {
            return Err(Error::invalid(
                format!("container {id}"),
                format!("already has an endpoint ({})", old.state),
                format!("run 'nethook detach {id}' first"),
            ));
        }
        // A crashed earlier attach of the same id: clear it before starting again.
        super::detach::detach_locked(dirs, &old, None, super::detach::LinkCleanup::Wait)?;
    }
    Ok(())
}

/// Load the networks asked for; host and none networks stand alone.
fn load_networks(dirs: &Dirs, req: &AttachRequest, host: &RouteSocket) -> Result<Vec<Network>> {
    let mut nets = Vec::new();
    for name in &req.wants.networks {
        if nets.iter().any(|n: &Network| &n.name == name) {
            return Err(Error::invalid(
                format!("network {name}"),
                "is listed twice",
                "name each network once",
            ));
        }
        let net = super::network::load_or_default(dirs, name, host)?;
        // Overlay: this host's block (claimed in etcd at first use only).
        nets.push(crate::cluster::local_view(dirs, net)?);
    }
    if nets.len() > 1 {
        if let Some(n) = nets.iter().find(|n| !n.driver.has_interfaces()) {
            return Err(Error::invalid(
                format!("network {}", n.name),
                format!(
                    "({} driver) cannot be combined with other networks",
                    n.driver
                ),
                format!("use {} alone", n.name),
            ));
        }
    }
    Ok(nets)
}

/// A container on a host or none network: no addresses and (host) no links; the record
/// keeps ps and poststop behaving the same.
fn attach_plain(dirs: &Dirs, req: &AttachRequest, net: &Network) -> Result<Endpoint> {
    if !req.wants.publish.is_empty() {
        return Err(Error::invalid(
            format!("network {}", net.name),
            format!("({} driver) cannot publish ports", net.driver),
            if net.driver == DriverKind::Host {
                "the container shares the host's ports already: leave out the publish"
            } else {
                "leave out the publish, or use a bridge network"
            },
        ));
    }
    let netns_id = match net.driver {
        DriverKind::Host => {
            let shares = match req.open_netns() {
                Ok(ns) => ns.id()? == Netns::current()?.id()?,
                Err(_) => true,
            };
            if !shares {
                return Err(Error::invalid(
                    format!("network {}", net.name),
                    "(host driver) needs a container that shares the host's network namespace",
                    "remove the network entry from linux.namespaces in config.json",
                ));
            }
            None
        }
        DriverKind::None => {
            let ns = req.open_netns()?;
            let id = ns.id()?;
            let home = Netns::current()?;
            if id == home.id()? {
                return Err(Error::invalid(
                    format!("network {}", net.name),
                    "needs a container with a network namespace of its own",
                    "add {\"type\": \"network\"} to linux.namespaces",
                ));
            }
            ns.run_in(&home, || RouteSocket::open()?.set_up_by_name("lo"))?;
            Some(id)
        }
        _ => None,
    };
    let mut ep = Endpoint {
        id: req.id.clone(),
        state: EpState::Ready,
        pid: std::process::id(),
        netns: req.netns.display().to_string(),
        netns_id,
        hostname: req.hostname.clone(),
        aliases: req.wants.aliases.clone(),
        files: Vec::new(),
        source: req.source.to_string(),
        attachments: Vec::new(),
        netmode: Some(net.name.clone()),
        ports: Vec::new(),
        created: super::now(),
        owner: req.owner,
        container: req.container_pid.and_then(ProcId::of),
    };
    endpoint::save(dirs, &ep)?;
    if let Some(plan) = &req.files {
        let r = write_files(plan, req, &ep, &[]);
        match r {
            Ok(files) => ep.files = files,
            Err(e) => {
                let _ = endpoint::remove(dirs, &ep.id);
                return Err(e);
            }
        }
        endpoint::save(dirs, &ep)?;
    }
    Ok(ep)
}

fn attach_locked(dirs: &Dirs, req: &AttachRequest) -> Result<Endpoint> {
    clear_stale(dirs, &req.id)?;
    // Everything that can be checked without changing anything, first.
    let specs: Vec<(PublishSpec, &str)> = req
        .wants
        .publish
        .iter()
        .map(|raw| publish::parse(raw).map(|s| (s, raw.as_str())))
        .collect::<Result<_>>()?;
    // One host socket and one look at our own namespace serve the whole attach (each socket
    // is a runtime, an epoll set and a netlink bind: not free on the hook's path).
    let home = Netns::current()?;
    let host = RouteSocket::open()?;
    let nets = load_networks(dirs, req, &host)?;
    if let Some(net) = nets.first().filter(|n| !n.driver.has_interfaces()) {
        return attach_plain(dirs, req, net);
    }
    let ns = req.open_netns()?;
    let netns_id = ns.id()?;
    if netns_id == home.id()? {
        return Err(Error::invalid(
            format!("namespace {}", req.netns.display()),
            "is nethook's own (the host's)",
            "add {\"type\": \"network\"} to linux.namespaces, or use the host network",
        ));
    }
    let ctx = Ctx::with(home, host, Some(ns))?;
    if !specs.is_empty() {
        if let Some(n) = nets.first().filter(|n| !n.driver.bridged()) {
            return Err(Error::invalid(
                format!("network {}", n.name),
                format!("({} driver) cannot publish ports: its traffic never passes this host's firewall", n.driver),
                "publish from a container whose first network is a bridge network",
            ));
        }
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
    finish(dirs, &req.id, &ctx, result, undo)
}

/// Success as it is; a failure rolled back, with the rollback's own errors appended.
fn finish<T>(
    dirs: &Dirs,
    id: &ContainerId,
    ctx: &Ctx,
    result: Result<T>,
    undo: Vec<Undo>,
) -> Result<T> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            let errs = rollback(dirs, id, ctx, undo);
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

/// Lease an address on `net` (under its lock) and describe the interface that will carry it.
fn plan_attachment(
    dirs: &Dirs,
    net: &Network,
    id: &ContainerId,
    wants: &Wants,
    interface: IfName,
    first: bool,
    undo: &mut Vec<Undo>,
) -> Result<Attachment> {
    // Overlay: `view` is the host block the address is in (another is claimed when all are full).
    let (ip, view) = {
        let _l = Lock::acquire(&dirs.network_lock(&net.name))?;
        let mut leases = FileLeases::open(dirs, &net.name)?;
        crate::cluster::allocate(
            dirs,
            &mut leases,
            net,
            id,
            wants.ips.get(&net.name).copied(),
        )?
    };
    undo.push(Undo::Lease(net.name.clone(), ip));
    crate::fault::point("attach.lease");
    let mac = match (first, wants.mac) {
        (true, Some(m)) => m,
        _ => Mac::from_ipv4(ip),
    };
    let s = view.subnet4();
    let s6 = net.subnet6();
    let mut tuning = crate::tuning::Tuning::from_options(&net.options)?.overlay(&wants.tuning);
    let mtu = tuning.mtu.take().or(net.mtu);
    if let Some(m) = mtu.filter(|m| s6.is_some() && *m < crate::config::MIN_MTU_IPV6) {
        return Err(Error::invalid(
            format!("mtu {m} on network {}", net.name),
            format!(
                "is below {}, the least IPv6 works with",
                crate::config::MIN_MTU_IPV6
            ),
            "give a larger nethook.mtu",
        ));
    }
    if tuning.ingress.is_some() && net.driver == DriverKind::Macvlan {
        return Err(Error::invalid(
            format!("bandwidth.ingress on network {}", net.name),
            "would need an ifb device on macvlan, which nethook does not make",
            "limit egress only, or use a bridge network",
        ));
    }
    Ok(Attachment {
        network: net.name.clone(),
        interface,
        host_interface: host_ifname(&net.name, id),
        ipv4: ip,
        prefix_len: s.subnet.prefix_len(),
        gateway: s.gateway,
        mac,
        masquerade: net.masquerade,
        driver: net.driver,
        ipv6: s6.map(|s6| s6.address_for(&s.subnet, ip)),
        prefix_len6: s6.map(|s6| s6.subnet.prefix_len()),
        gateway6: s6.map(|s6| s6.gateway),
        mtu,
        tuning,
    })
}

/// Sysctls and offloads inside the container, bandwidth limits on both ends: a root tbf shapes
/// what a link sends, so egress goes on the container's interface and ingress on the host-side
/// veth (traffic into the container). The links go with the attachment, so nothing here needs
/// undoing.
fn apply_tuning(ctx: &Ctx, att: &Attachment) -> Result<()> {
    let t = &att.tuning;
    let (ns, csock) = ctx.container(&att.network)?;
    if !t.sysctls.is_empty() || !t.offloads.is_empty() {
        let ifname = att.interface.to_string();
        ns.run_in(&ctx.home, || {
            crate::tuning::write_sysctls(&t.sysctls)?;
            if !t.offloads.is_empty() {
                crate::netlink::ethtool::set_offloads(&ifname, &t.offloads)?;
            }
            Ok(())
        })?;
    }
    let latency = crate::netlink::tc::DEFAULT_LATENCY_MS;
    if let Some(rate) = t.egress {
        let eth = csock.link_by_name(att.interface.as_str())?.ok_or_else(|| {
            Error::kernel(
                format!("interface {} in the container", att.interface),
                "vanished during setup",
                "retry",
            )
        })?;
        csock.set_tbf(eth.index, rate, None, latency)?;
    }
    if let Some(rate) = t.ingress {
        let host = driver::bridge::host_link(ctx, att)?;
        ctx.host.set_tbf(host.index, rate, None, latency)?;
    }
    Ok(())
}

/// The masquerade elements of some attachments.
fn masq_changes(atts: &[&Attachment]) -> Vec<Change> {
    let mut v = Vec::new();
    for a in atts.iter().filter(|a| a.masquerade) {
        v.push(Change::AddMasq4(a.ipv4));
        if let Some(ip6) = a.ipv6 {
            v.push(Change::AddMasq6(ip6));
        }
    }
    v
}

/// Links for some of an endpoint's attachments (`default_at`: the index of the one that gets
/// the default routes, if among them), then their firewall elements and `ports`.
fn make_links_and_rules(
    dirs: &Dirs,
    ctx: &Ctx,
    nets: &[&Network],
    atts: &[&Attachment],
    default_at: Option<usize>,
    ports: &[Published],
    undo: &mut Vec<Undo>,
) -> Result<()> {
    for (i, (net, att)) in nets.iter().zip(atts).enumerate() {
        let host_link = match net.driver {
            DriverKind::Macvlan => {
                let (index, parent_mtu) = driver::macvlan::parent_index(&ctx.host, net)?;
                if let (Some(m), Some(p)) = (att.mtu, parent_mtu) {
                    if m > p {
                        return Err(Error::invalid(
                            format!("mtu {m} on network {}", net.name),
                            format!(
                                "is above the MTU of parent {} ({p})",
                                net.parent.as_ref().map(|p| p.as_str()).unwrap_or("?")
                            ),
                            format!("give an MTU of at most {p}"),
                        ));
                    }
                }
                index
            }
            _ => {
                let _l = Lock::acquire(&dirs.network_lock(&net.name))?;
                // A new bridge gets its network's firewall elements first: a crash between the
                // two then leaves elements without a bridge (re-added, idempotent, with it
                // next time), never a bridge without its elements.
                let (index, created) = driver::bridge::ensure_bridge_with(&ctx.host, net, || {
                    let mut fw = Firewall::open()?;
                    super::firewall_sync::ensure_table(dirs, &mut fw)?;
                    fw.apply(&super::firewall_sync::network_changes(net))?;
                    crate::fault::point("attach.net-rules");
                    Ok(())
                })?;
                if net.overlay.is_some() {
                    // The gateway of the host block this container is in (a later block's).
                    ctx.host.add_addr4(index, att.gateway, att.prefix_len)?;
                }
                if created {
                    crate::fault::point("attach.bridge");
                }
                index
            }
        };
        let mut made = Vec::new();
        let r = driver::for_network(net).setup(
            ctx,
            net,
            host_link,
            att,
            default_at == Some(i),
            &mut made,
        );
        undo.push(Undo::Links(made));
        r?;
        if !att.tuning.is_empty() {
            apply_tuning(ctx, att)?;
        }
        if default_at == Some(i) && !ports.is_empty() {
            driver::bridge::prepare_publish(ctx, net, att)?;
        }
    }

    // Firewall: one batch of element adds.
    let masq = masq_changes(atts);
    if masq.is_empty() && ports.is_empty() {
        // A macvlan-only endpoint, or a bridge network without masquerade: nothing to add.
        return Ok(());
    }
    let mut fw = Firewall::open()?;
    super::firewall_sync::ensure_table(dirs, &mut fw)?;
    let mut changes = masq.clone();
    for p in ports {
        changes.push(p.add_change()?);
    }
    fw.apply(&changes)?;
    undo.push(Undo::Masq(masq));
    undo.push(Undo::Forwards(ports.to_vec()));
    crate::fault::point("attach.firewall");
    Ok(())
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
    // 0. The record, before anything is taken: a crash from here on leaves a `creating` record
    // with a dead pid, which gc (and a new attach of the id) clears, with whatever leases and
    // port claims the id holds.
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
        attachments: Vec::new(),
        netmode: None,
        ports: Vec::new(),
        created: super::now(),
        owner: req.owner,
        container: req.container_pid.and_then(ProcId::of),
    };
    endpoint::save(dirs, &ep)?;
    undo.push(Undo::Record);
    crate::fault::point("attach.record-intent");

    // 1. Addresses, under each network's lock, and the record: intent before any kernel change.
    let mut atts = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        let interface = if i == 0 {
            first_if.clone()
        } else {
            IfName::new(&format!("eth{i}"))?
        };
        atts.push(plan_attachment(
            dirs,
            net,
            &req.id,
            &req.wants,
            interface,
            i == 0,
            undo,
        )?);
    }
    // Host ports, under the ports lock: a clash is refused here, before any kernel change.
    let mut ports = Vec::new();
    if !specs.is_empty() {
        let _l = Lock::acquire(&dirs.ports_lock())?;
        let claims = PortClaims::open(dirs)?;
        let mut ctr_ips = vec![IpAddr::V4(atts[0].ipv4)];
        ctr_ips.extend(atts[0].ipv6.map(IpAddr::V6));
        for (spec, raw) in specs {
            let targets = spec.targets(&ctr_ips, raw)?;
            let pairs = claims.claim(spec, &req.id, raw)?;
            let got: Vec<Published> = spec.published(&pairs, &targets);
            undo.push(Undo::Ports(got.clone()));
            ports.extend(got);
        }
        crate::fault::point("attach.ports");
    }
    ep.attachments = atts;
    ep.ports = ports;
    endpoint::save(dirs, &ep)?;
    crate::fault::point("attach.record");

    // 2. Links, 3. firewall elements.
    let net_refs: Vec<&Network> = nets.iter().collect();
    let att_refs: Vec<&Attachment> = ep.attachments.iter().collect();
    make_links_and_rules(dirs, ctx, &net_refs, &att_refs, Some(0), &ep.ports, undo)?;

    // 4. Files in the container.
    if let Some(files) = &req.files {
        ep.files = write_files(files, req, &ep, nets)?;
    }

    // 5. Done.
    crate::fault::point("attach.before-ready");
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

/// /etc/hosts, /etc/hostname and /etc/resolv.conf for the container; returns their host paths.
fn write_files(
    plan: &FilesPlan,
    req: &AttachRequest,
    ep: &Endpoint,
    nets: &[Network],
) -> Result<Vec<PathBuf>> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    for a in &ep.attachments {
        addrs.push(IpAddr::V4(a.ipv4));
        if let Some(v6) = a.ipv6 {
            addrs.push(IpAddr::V6(v6));
        }
    }
    let files = EtcFiles {
        hostname: req.hostname.clone(),
        aliases: req.wants.aliases.clone(),
        addrs,
        nameservers: Vec::new(),
        search: Vec::new(),
        options: Vec::new(),
    };
    let resolv = if ep.netmode.is_some() && ep.netns_id.is_none() {
        // The host network: the host's resolvers, stubs included, work as they are.
        rootfs::host_resolv_conf()
    } else {
        let (mut nameservers, search, options) = rootfs::host_resolvers();
        // DNS (src/dns): the first DNS-enabled network's gateway answers names, forwards the rest.
        if let Some(gw) = crate::dns::nameserver(nets) {
            nameservers = vec![gw];
        }
        EtcFiles {
            nameservers,
            search,
            options,
            ..files.clone()
        }
        .resolv_conf()
    };
    rootfs::write(&plan.hosts, &files.hosts())?;
    crate::fault::point("attach.file-hosts");
    rootfs::write(&plan.hostname, &files.hostname_file())?;
    crate::fault::point("attach.file-hostname");
    rootfs::write(&plan.resolv, &resolv)?;
    crate::fault::point("attach.file-resolv");
    Ok(vec![
        plan.hosts.host_path(),
        plan.hostname.host_path(),
        plan.resolv.host_path(),
    ])
}

/// `nethook network connect NETWORK ID`: one more interface for a running container, with its
/// lease, masquerade and DNS names, live. No default route changes (the first network keeps it).
pub fn connect(
    dirs: &Dirs,
    id: &ContainerId,
    name: &NetworkName,
    wants: &Wants,
) -> Result<Endpoint> {
    connect_as(dirs, id, name, wants, None)
}

/// [`connect`] with the interface name inside the container given (CNI's `CNI_IFNAME`);
/// `None` takes the first free `ethN`.
pub fn connect_as(
    dirs: &Dirs,
    id: &ContainerId,
    name: &NetworkName,
    wants: &Wants,
    ifname: Option<IfName>,
) -> Result<Endpoint> {
    let _ctr = Lock::acquire(&dirs.container_lock(id))?;
    let ep = endpoint::load(dirs, id)?.ok_or_else(|| {
        Error::invalid(
            format!("container {id}"),
            "has no endpoint",
            "start it with nethook's hook, or 'nethook attach' it first",
        )
    })?;
    if ep.state != EpState::Ready {
        return Err(Error::invalid(
            format!("container {id}"),
            format!("is {}", ep.state),
            "wait for it, or run 'nethook gc'",
        ));
    }
    if ep.attachments.iter().any(|a| &a.network == name) {
        return Err(Error::invalid(
            format!("container {id}"),
            format!("is already on network {name}"),
            "nothing to do",
        ));
    }
    if let Some(m) = &ep.netmode {
        return Err(Error::invalid(
            format!("container {id}"),
            format!("is on network {m}, which stands alone"),
            "restart it on a bridge or macvlan network",
        ));
    }
    let host = RouteSocket::open()?;
    let net = super::network::load_or_default(dirs, name, &host)?;
    drop(host);
    if !net.driver.has_interfaces() {
        return Err(Error::invalid(
            format!("network {name}"),
            format!(
                "({} driver) cannot be connected to a running container",
                net.driver
            ),
            "connect a bridge or macvlan network",
        ));
    }
    let ns = open_recorded_netns(&ep)?;
    let ctx = Ctx::open(Some(ns))?;
    let used: Vec<&str> = ep
        .attachments
        .iter()
        .map(|a| a.interface.as_str())
        .collect();
    if let Some(i) = ifname.as_ref().filter(|i| used.contains(&i.as_str())) {
        return Err(Error::invalid(
            format!("container {id}"),
            format!("already has an interface {i}"),
            "give another interface name",
        ));
    }
    let interface = match ifname {
        Some(i) => i.to_string(),
        None => (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(&n.as_str()))
            .expect("a free ethN"),
    };
    let mut undo = Vec::new();
    let r = (|| {
        let att = plan_attachment(
            dirs,
            &net,
            id,
            wants,
            IfName::new(&interface)?,
            false,
            &mut undo,
        )?;
        let mut rec = ep.clone();
        rec.attachments.push(att.clone());
        rec.state = EpState::Creating;
        rec.pid = std::process::id();
        endpoint::save(dirs, &rec)?;
        undo.push(Undo::RecordWas(Box::new(ep.clone())));
        make_links_and_rules(dirs, &ctx, &[&net], &[&att], None, &[], &mut undo)?;
        rec.state = EpState::Ready;
        endpoint::save(dirs, &rec)?;
        crate::dns::endpoint_changed(dirs, id, net.dns, crate::dns::Event::Attached);
        Ok(rec)
    })();
    finish(dirs, id, &ctx, r, undo)
}

/// The namespace an endpoint was attached in, if it is still that one (a path like
/// /proc/PID/ns/net may now name another process's namespace).
pub fn open_recorded_netns(ep: &Endpoint) -> Result<Netns> {
    let ns = Netns::open(std::path::Path::new(&ep.netns))?;
    if Some(ns.id()?) != ep.netns_id {
        return Err(Error::invalid(
            format!("namespace {} of container {}", ep.netns, ep.id),
            "is no longer the container's (it exited, or the pid was reused)",
            "run 'nethook gc' to clear the endpoint",
        ));
    }
    Ok(ns)
}

fn rollback(dirs: &Dirs, id: &ContainerId, ctx: &Ctx, undo: Vec<Undo>) -> ErrorList {
    let mut errs = ErrorList::default();
    for step in undo.into_iter().rev() {
        match step {
            Undo::Masq(changes) if !changes.is_empty() => {
                let changes: Vec<Change> = changes
                    .into_iter()
                    .map(|c| match c {
                        Change::AddMasq4(ip) => Change::ExpireMasq4(ip),
                        Change::AddMasq6(ip) => Change::ExpireMasq6(ip),
                        other => other,
                    })
                    .collect();
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
                        Made::ContainerLink(name) => {
                            if let Some((_, csock)) = &ctx.container {
                                errs.note(csock.delete_link_by_name(&name));
                            }
                        }
                    }
                }
            }
            Undo::Record => {
                errs.note(endpoint::remove(dirs, id));
            }
            Undo::RecordWas(ep) => {
                errs.note(endpoint::save(dirs, &ep));
            }
            Undo::Lease(net, ip) => {
                let _l = Lock::acquire(&dirs.network_lock(&net));
                errs.note(FileLeases::open(dirs, &net).and_then(|l| l.release(ip, id)));
            }
        }
    }
    errs
}
