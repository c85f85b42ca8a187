//! ADD, DEL, CHECK, GC, STATUS and VERSION on top of the `ops` transactions.

use super::types::{
    code, parse_cni_args, result_json, version_tuple, CniError, CniResult, Iface, IpConf, Made,
    NetConf, SUPPORTED_VERSIONS,
};
use super::Env;
use crate::config::{self, Network, NetworkSpec, DEFAULT_NETWORK};
use crate::driver::Ctx;
use crate::names::{ContainerId, IfName, Mac, NetworkName};
use crate::netlink::route::RouteSocket;
use crate::netns::Netns;
use crate::oci::Wants;
use crate::ops::attach::{self, AttachRequest};
use crate::ops::detach::{self, LinkCleanup};
use crate::state::endpoint::{self, Attachment, Endpoint, EpState};
use crate::state::Dirs;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// The record's `source` for CNI-made endpoints.
pub const SOURCE: &str = "cni";

pub fn version(v: &str) -> Value {
    json!({"cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS})
}

fn cfg_err(msg: impl Into<String>, e: &crate::error::Error) -> CniError {
    CniError::from_lib(code::INVALID_CONFIG, &msg.into(), e)
}

fn failed(msg: impl Into<String>, e: &crate::error::Error) -> CniError {
    CniError::from_lib(code::FAILED, &msg.into(), e)
}

/// The nethook network the config names (not created).
pub fn network_name(conf: &NetConf) -> CniResult<NetworkName> {
    let raw = match (&conf.network, &conf.subnet) {
        (Some(n), _) => n.clone(),
        (None, Some(_)) => conf.name.clone().unwrap_or_default().to_ascii_lowercase(),
        (None, None) => DEFAULT_NETWORK.to_string(),
    };
    NetworkName::new(&raw).map_err(|e| cfg_err("the config names no usable nethook network", &e))
}

/// The network, made from the inline settings on first use.
fn network(dirs: &Dirs, conf: &NetConf) -> CniResult<Network> {
    let name = network_name(conf)?;
    let host = RouteSocket::open().map_err(|e| failed("cannot open netlink", &e))?;
    let Some(subnet) = &conf.subnet else {
        return crate::ops::network::load_or_default(dirs, &name, &host)
            .map_err(|e| cfg_err(format!("network {name} is not usable"), &e));
    };
    let want = config::parse_ipv4_net(subnet)
        .map_err(|e| cfg_err(format!("subnet {subnet} is not usable"), &e))?;
    let same = |n: Network| -> CniResult<Network> {
        if n.subnets.first().map(|s| s.subnet) == Some(want) {
            Ok(n)
        } else {
            Err(CniError::new(
                code::INVALID_CONFIG,
                format!("network {name} exists with another subnet"),
                format!(
                    "nethook network {name} has {}, the config asks for {want}; fix the config or 'nethook network rm {name}'",
                    n.subnets.first().map(|s| s.subnet.to_string()).unwrap_or_default()
                ),
            ))
        }
    };
    if let Some(n) = config::load(dirs, &name).map_err(|e| cfg_err("network config", &e))? {
        return same(n);
    }
    let spec = NetworkSpec {
        name: name.to_string(),
        subnets: vec![subnet.clone()],
        gateways: conf.gateway.iter().cloned().collect(),
        ip_range: conf.ip_range.clone(),
        bridge: conf.bridge.clone(),
        mtu: conf.mtu,
        no_masquerade: conf.ip_masq == Some(false),
        no_dns: conf.container_dns == Some(false),
        ..Default::default()
    };
    match crate::ops::network::create(dirs, &spec, Some(&host)) {
        Ok(n) => Ok(n),
        // Another ADD made it first.
        Err(e) => match config::load(dirs, &name).ok().flatten() {
            Some(n) => same(n),
            None => Err(cfg_err(format!("cannot create network {name}"), &e)),
        },
    }
}

fn container_id(env: &Env) -> CniResult<ContainerId> {
    let raw = env.require("CNI_CONTAINERID", &env.container_id)?;
    ContainerId::new(raw)
        .map_err(|e| CniError::from_lib(code::INVALID_ENV, "bad CNI_CONTAINERID", &e))
}

fn ifname(env: &Env) -> CniResult<IfName> {
    let raw = env.require("CNI_IFNAME", &env.ifname)?;
    IfName::new(raw).map_err(|e| CniError::from_lib(code::INVALID_ENV, "bad CNI_IFNAME", &e))
}

/// What the container asks for: runtimeConfig capabilities, then `CNI_ARGS` (`IP`, `MAC`).
fn wants(env: &Env, conf: &NetConf, net: &NetworkName) -> CniResult<Wants> {
    let mut w = Wants {
        networks: vec![net.clone()],
        ..Default::default()
    };
    let rc = conf.runtime_config.clone().unwrap_or_default();
    let mut ips = rc.ips.clone();
    let mut mac = rc.mac.clone();
    for (k, v) in parse_cni_args(env.args.as_deref().unwrap_or("")) {
        match k.as_str() {
            "IP" if ips.is_empty() => ips = v.split(',').map(String::from).collect(),
            "MAC" if mac.is_none() => mac = Some(v),
            _ => {}
        }
    }
    for ip in &ips {
        let addr = ip.split('/').next().unwrap_or("");
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => {
                w.ips.insert(net.clone(), v4);
            }
            Ok(IpAddr::V6(_)) => {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!("static IPv6 address {ip}"),
                    "a container's IPv6 address on a nethook network follows its IPv4 one: ask for the IPv4 address",
                ))
            }
            Err(_) => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("ips entry {ip:?} is not an address"),
                    "write it like 10.89.0.5/16",
                ))
            }
        }
    }
    if let Some(m) = mac {
        w.mac = Some(Mac::parse(&m).map_err(|e| cfg_err(format!("bad mac {m}"), &e))?);
    }
    match &rc.aliases {
        Some(Value::Array(a)) => w
            .aliases
            .extend(a.iter().filter_map(|v| v.as_str().map(String::from))),
        Some(Value::Object(m)) => {
            for key in [Some(net.as_str()), conf.name.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(Value::Array(a)) = m.get(key) {
                    w.aliases
                        .extend(a.iter().filter_map(|v| v.as_str().map(String::from)));
                    break;
                }
            }
        }
        _ => {}
    }
    for a in &w.aliases {
        crate::oci::check_dns_name("alias", a).map_err(|e| cfg_err("bad alias", &e))?;
    }
    w.publish = rc.port_mappings.iter().map(|p| p.to_spec()).collect();
    Ok(w)
}

/// The container's DNS name: `K8S_POD_NAME` from `CNI_ARGS`, else the container id (made a
/// valid DNS label when it is not one).
fn hostname(env: &Env, id: &ContainerId) -> String {
    let pod = parse_cni_args(env.args.as_deref().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "K8S_POD_NAME")
        .map(|(_, v)| v);
    for c in [pod, Some(id.to_string())].into_iter().flatten() {
        if crate::oci::check_dns_name("hostname", &c).is_ok() {
            return c;
        }
    }
    let s: String = id
        .as_str()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect();
    s.trim_matches('-').to_string()
}

fn hook_owned(id: &ContainerId, ep: &Endpoint) -> CniError {
    CniError::new(
        code::HOOK_OWNED,
        format!(
            "container {id} is already networked by nethook's OCI hook (source {})",
            ep.source
        ),
        "a container is networked by the nethook hook or by its CNI plugin, not both: remove nethook from the container's hooks or from the conflist",
    )
}

pub fn add(dirs: &Dirs, env: &Env, conf: &NetConf) -> CniResult<Value> {
    let version = conf.version()?;
    let id = container_id(env)?;
    let ifname = ifname(env)?;
    let netns = PathBuf::from(env.require("CNI_NETNS", &env.netns)?);
    let ns = Netns::open(&netns)
        .map_err(|e| CniError::from_lib(code::INVALID_ENV, "cannot open CNI_NETNS", &e))?;
    let ns_id = ns
        .id()
        .map_err(|e| CniError::from_lib(code::INVALID_ENV, "cannot open CNI_NETNS", &e))?;
    drop(ns);
    let net = network(dirs, conf)?;
    let wants = wants(env, conf, &net.name)?;
    let existing = endpoint::load(dirs, &id).map_err(|e| failed("endpoint record", &e))?;
    let ep = match existing {
        Some(ep) if ep.source != SOURCE => return Err(hook_owned(&id, &ep)),
        Some(ep) if ep.state == EpState::Ready => {
            if ep.netns_id != Some(ns_id) {
                return Err(CniError::new(
                    code::FAILED,
                    format!("container {id} is attached in another network namespace"),
                    format!("its record names {}; DEL it first", ep.netns),
                ));
            }
            if let Some(a) = ep.attachments.iter().find(|a| a.interface == ifname) {
                if a.network != net.name {
                    return Err(CniError::new(
                        code::FAILED,
                        format!(
                            "container {id} has {ifname} on network {} already",
                            a.network
                        ),
                        "use another CNI_IFNAME, or DEL it first",
                    ));
                }
                // The same ADD again: the same result.
                ep
            } else {
                if !wants.publish.is_empty() {
                    return Err(CniError::new(
                        code::UNSUPPORTED_FIELD,
                        "portMappings on a container's second nethook network",
                        "nethook publishes ports to a container's first network only",
                    ));
                }
                attach::connect_as(dirs, &id, &net.name, &wants, Some(ifname.clone()))
                    .map_err(|e| failed(format!("connecting network {}", net.name), &e))?
            }
        }
        _ => {
            let req = AttachRequest {
                id: id.clone(),
                netns: netns.clone(),
                hostname: hostname(env, &id),
                wants,
                ifname: Some(ifname.clone()),
                files: None,
                source: SOURCE,
                pinned: None,
                owner: None,
                container_pid: None,
            };
            attach::attach(dirs, &req)
                .map_err(|e| failed(format!("attaching to network {}", net.name), &e))?
        }
    };
    let made = made(&ep, &ifname, &net, &netns)?;
    Ok(result_json(version, &made, conf.prev_result.as_ref()))
}

/// The result for attachment `ifname` of `ep`.
fn made(ep: &Endpoint, ifname: &IfName, net: &Network, netns: &std::path::Path) -> CniResult<Made> {
    let (i, a) = ep
        .attachments
        .iter()
        .enumerate()
        .find(|(_, a)| &a.interface == ifname)
        .ok_or_else(|| {
            CniError::new(
                code::FAILED,
                format!("container {} has no interface {ifname} after ADD", ep.id),
                "report this as a bug",
            )
        })?;
    let mut m = Made::default();
    if a.driver == config::DriverKind::Bridge {
        let host_mac = RouteSocket::open()
            .and_then(|s| s.link_by_name(a.host_interface.as_str()))
            .ok()
            .flatten()
            .and_then(|l| l.mac)
            .map(|m| m.to_string());
        m.interfaces.push(Iface {
            name: a.host_interface.to_string(),
            mac: host_mac,
            sandbox: None,
            mtu: a.mtu,
        });
    }
    m.interfaces.push(Iface {
        name: a.interface.to_string(),
        mac: Some(a.mac.to_string()),
        sandbox: Some(netns.display().to_string()),
        mtu: a.mtu,
    });
    let ci = m.interfaces.len() - 1;
    m.ips.push(IpConf {
        address: format!("{}/{}", a.ipv4, a.prefix_len),
        gateway: Some(a.gateway.to_string()),
        interface: ci,
        v6: false,
    });
    if let (Some(ip6), Some(p6)) = (a.ipv6, a.prefix_len6) {
        m.ips.push(IpConf {
            address: format!("{ip6}/{p6}"),
            gateway: a.gateway6.map(|g| g.to_string()),
            interface: ci,
            v6: true,
        });
    }
    // The first attachment carries the default routes.
    if i == 0 {
        m.routes
            .push(("0.0.0.0/0".into(), Some(a.gateway.to_string())));
        if let Some(g6) = a.gateway6 {
            m.routes.push(("::/0".into(), Some(g6.to_string())));
        }
    }
    if let Some(ns) = crate::dns::nameserver(std::slice::from_ref(net)) {
        m.nameservers.push(ns.to_string());
    }
    Ok(m)
}

/// The record and attachment of (`CNI_CONTAINERID`, `CNI_IFNAME`) when CNI made them.
fn cni_attachment(
    dirs: &Dirs,
    id: &ContainerId,
    ifname: Option<&IfName>,
) -> CniResult<Option<(Endpoint, Option<Attachment>)>> {
    let Some(ep) = endpoint::load(dirs, id).map_err(|e| failed("endpoint record", &e))? else {
        return Ok(None);
    };
    let att = ep
        .attachments
        .iter()
        .find(|a| ifname.is_none_or(|i| &a.interface == i))
        .cloned();
    Ok(Some((ep, att)))
}

pub fn del(dirs: &Dirs, env: &Env, _conf: &NetConf) -> CniResult<()> {
    let id = container_id(env)?;
    let ifname = env
        .ifname
        .as_deref()
        .map(IfName::new)
        .transpose()
        .map_err(|e| CniError::from_lib(code::INVALID_ENV, "bad CNI_IFNAME", &e))?;
    let Some((ep, att)) = cni_attachment(dirs, &id, ifname.as_ref())? else {
        return Ok(());
    };
    if ep.source != SOURCE {
        // Not CNI's: left alone (a refused ADD is followed by a DEL).
        eprintln!(
            "nethook: cni DEL {id}: the endpoint was made by the {} path; left alone",
            ep.source
        );
        return Ok(());
    }
    let only = match (&att, ep.attachments.len()) {
        (Some(a), n) if n > 1 => Some(a.network.clone()),
        (Some(_), _) => None,
        // No attachment of that ifname: a record with none at all (half-made) goes.
        (None, 0) => None,
        (None, _) => return Ok(()),
    };
    detach::detach(dirs, &id, only.as_ref(), LinkCleanup::Wait)
        .map_err(|e| failed(format!("detaching container {id}"), &e))
}

pub fn check(dirs: &Dirs, env: &Env, conf: &NetConf) -> CniResult<()> {
    let version = conf.version()?;
    if version_tuple(version) < (0, 4, 0) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CHECK is not defined for cniVersion {version}"),
            "use cniVersion 0.4.0 or later",
        ));
    }
    let id = container_id(env)?;
    let ifname = ifname(env)?;
    let netns = PathBuf::from(env.require("CNI_NETNS", &env.netns)?);
    let unknown = || {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("container {id} has no nethook interface {ifname}"),
            "ADD it first",
        )
    };
    let (ep, att) = match cni_attachment(dirs, &id, Some(&ifname))? {
        Some((ep, _)) if ep.source != SOURCE => return Err(hook_owned(&id, &ep)),
        Some((ep, Some(a))) => (ep, a),
        _ => return Err(unknown()),
    };
    let problems = problems(dirs, &ep, &att, &netns)?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::CHECK_FAILED,
            format!("container {id}: {}", problems[0]),
            problems.join("; "),
        ))
    }
}

/// What is wrong with one attachment: interface, addresses, default route, host link, lease,
/// firewall elements, DNS name.
fn problems(
    dirs: &Dirs,
    ep: &Endpoint,
    a: &Attachment,
    netns: &std::path::Path,
) -> CniResult<Vec<String>> {
    let mut p = Vec::new();
    if ep.state != EpState::Ready {
        p.push(format!("endpoint is {}", ep.state));
    }
    let ns = match Netns::open(netns) {
        Ok(ns) => ns,
        Err(e) => {
            p.push(format!(
                "namespace {} cannot be opened: {e}",
                netns.display()
            ));
            return Ok(p);
        }
    };
    if ns.id().ok() != ep.netns_id {
        p.push(format!(
            "namespace {} is not the one {} was attached in",
            netns.display(),
            ep.id
        ));
        return Ok(p);
    }
    let ctx = Ctx::open(Some(ns)).map_err(|e| failed("entering the namespace", &e))?;
    let (_, csock) = ctx.container.as_ref().expect("a container socket");
    match csock.link_by_name(a.interface.as_str()) {
        Ok(Some(l)) => {
            if !l.up {
                p.push(format!("interface {} is down", a.interface));
            }
            if l.mac != Some(a.mac) {
                p.push(format!(
                    "interface {} has another MAC than {}",
                    a.interface, a.mac
                ));
            }
            let addrs = csock
                .addrs4()
                .map_err(|e| failed("listing addresses", &e))?;
            if !addrs
                .iter()
                .any(|x| x.index == l.index && x.addr == a.ipv4 && x.prefix_len == a.prefix_len)
            {
                p.push(format!(
                    "address {}/{} is missing from {}",
                    a.ipv4, a.prefix_len, a.interface
                ));
            }
            let first = ep.attachments.first().map(|f| &f.interface) == Some(&a.interface);
            if first {
                let routes = csock.routes4().map_err(|e| failed("listing routes", &e))?;
                if !routes.iter().any(|r| {
                    r.prefix_len == 0 && r.dst == Ipv4Addr::UNSPECIFIED && r.oif == Some(l.index)
                }) {
                    p.push(format!("default route via {} is missing", a.interface));
                }
            }
        }
        Ok(None) => p.push(format!(
            "interface {} is gone from the namespace",
            a.interface
        )),
        Err(e) => p.push(format!("interface {}: {e}", a.interface)),
    }
    // Host link, bridge, lease, masquerade and forwards: what `nethook check` looks at.
    let found = crate::ops::health::check(dirs, Some(ep.id.as_str()))
        .map_err(|e| failed("checking the endpoint", &e))?;
    p.extend(
        found
            .into_iter()
            .filter(|f| f.id == ep.id.as_str() || f.id == "-")
            .map(|f| f.problem),
    );
    // DNS: the name answers with this address, and a daemon serves it.
    let net = config::load(dirs, &a.network).ok().flatten();
    if net.as_ref().is_some_and(|n| n.dns) {
        let eps = endpoint::list(dirs).map_err(|e| failed("endpoint records", &e))?;
        let nets = config::list(dirs).map_err(|e| failed("network configs", &e))?;
        let recs = crate::dns::records::Records::build(&eps, &nets);
        let name = ep.hostname.to_ascii_lowercase();
        let ok = recs
            .asker(a.gateway, a.ipv4)
            .and_then(|asker| recs.lookup(&asker, &name))
            .is_some_and(|ips| ips.contains(&a.ipv4));
        if !ok {
            p.push(format!("DNS record {name} -> {} is missing", a.ipv4));
        }
        if crate::dns::lock_holder(dirs).is_none() {
            p.push("the DNS daemon is not running; run 'nethook restore'".into());
        }
    }
    Ok(p)
}

pub fn gc(dirs: &Dirs, conf: &NetConf) -> CniResult<()> {
    let net = network_name(conf)?;
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let eps = endpoint::list(dirs).map_err(|e| failed("endpoint records", &e))?;
    let mut errs = Vec::new();
    for ep in eps.iter().filter(|e| e.source == SOURCE) {
        let stale: Vec<&Attachment> = ep
            .attachments
            .iter()
            .filter(|a| a.network == net)
            .filter(|a| {
                !valid
                    .iter()
                    .any(|v| v.container_id == ep.id.as_str() && v.ifname == a.interface.as_str())
            })
            .collect();
        if stale.is_empty() {
            continue;
        }
        let only = (ep.attachments.len() > 1).then(|| net.clone());
        if let Err(e) = detach::detach(dirs, &ep.id, only.as_ref(), LinkCleanup::Wait) {
            errs.push(format!("{}: {e}", ep.id));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::FAILED,
            "GC could not release every stale attachment",
            errs.join("; "),
        ))
    }
}

pub fn status(dirs: &Dirs, conf: &NetConf) -> CniResult<()> {
    let unavailable =
        |msg: String, details: String| CniError::new(code::NOT_AVAILABLE, msg, details);
    let name = network_name(conf)?;
    if conf.subnet.is_none() && name.as_str() != DEFAULT_NETWORK {
        match config::load(dirs, &name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(unavailable(
                    format!("network {name} does not exist"),
                    format!("create it with 'nethook network create {name}'"),
                ))
            }
            Err(e) => {
                return Err(unavailable(
                    format!("network {name} is unreadable"),
                    e.to_string(),
                ))
            }
        }
    }
    // The run dir must take records.
    let probe = dirs
        .endpoints_dir()
        .join(format!(".status-{}", std::process::id()));
    let w = crate::state::ensure_dir(&dirs.endpoints_dir())
        .and_then(|()| crate::state::atomic_write(&probe, b"{}", false))
        .and_then(|()| crate::state::remove_file(&probe));
    if let Err(e) = w {
        return Err(unavailable(
            "the run dir is not writable".into(),
            e.to_string(),
        ));
    }
    // nftables over netlink, and rtnetlink.
    RouteSocket::open()
        .map_err(|e| unavailable("rtnetlink is not usable".into(), e.to_string()))?;
    crate::firewall::Firewall::open()
        .and_then(|mut f| f.table_exists())
        .map_err(|e| unavailable("nftables is not usable".into(), e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> NetConf {
        NetConf::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn wants_from_capabilities_and_cni_args() {
        let net = NetworkName::new("web").unwrap();
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"webnet","network":"web","runtimeConfig":{
            "portMappings":[{"hostPort":8080,"containerPort":80}],
            "ips":["10.1.0.9/24"],"aliases":{"webnet":["api","db"]}}}"#,
        );
        let env = Env {
            args: Some("IgnoreUnknown=1;IP=10.1.0.5;MAC=02:11:22:33:44:55".into()),
            ..Default::default()
        };
        let w = wants(&env, &c, &net).unwrap();
        // runtimeConfig wins over CNI_ARGS; CNI_ARGS fills in the rest.
        assert_eq!(w.ips[&net], Ipv4Addr::new(10, 1, 0, 9));
        assert_eq!(w.mac.unwrap().to_string(), "02:11:22:33:44:55");
        assert_eq!(w.aliases, vec!["api", "db"]);
        assert_eq!(w.publish, vec!["8080:80/tcp"]);
        assert_eq!(w.networks, vec![net.clone()]);
        let v6 = conf(r#"{"runtimeConfig":{"ips":["fd00::5/64"]}}"#);
        assert_eq!(
            wants(&Env::default(), &v6, &net).unwrap_err().code,
            code::UNSUPPORTED_FIELD
        );
    }

    #[test]
    fn network_names_and_hostnames() {
        assert_eq!(
            network_name(&conf(r#"{"network":"web"}"#))
                .unwrap()
                .as_str(),
            "web"
        );
        assert_eq!(
            network_name(&conf(r#"{"name":"Side","subnet":"10.9.0.0/24"}"#))
                .unwrap()
                .as_str(),
            "side"
        );
        assert_eq!(network_name(&conf("{}")).unwrap().as_str(), DEFAULT_NETWORK);
        let id = ContainerId::new(&"a".repeat(64)).unwrap();
        let env = Env {
            args: Some("K8S_POD_NAME=web-0".into()),
            ..Default::default()
        };
        assert_eq!(hostname(&env, &id), "web-0");
        assert_eq!(hostname(&Env::default(), &id), "a".repeat(63));
        let plus = ContainerId::new("x+y").unwrap();
        assert_eq!(hostname(&Env::default(), &plus), "xy");
    }
}
