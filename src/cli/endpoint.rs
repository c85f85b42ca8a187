//! `nethook attach`, `detach`, `ps`: the same transactions as the hook, by hand.

use super::output;
use super::Format;
use crate::config::DEFAULT_NETWORK;
use crate::error::Error;
use crate::names::{ContainerId, IfName, NetworkName};
use crate::netns;
use crate::oci::{self, HookArgs};
use crate::ops::attach::{attach as do_attach, AttachRequest};
use crate::ops::detach::{detach as do_detach, LinkCleanup};
use crate::privilege::{self, Caller};
use crate::state::{endpoint, Dirs, Lock};
use clap::Args;

#[derive(Args, Debug)]
pub struct AttachCmd {
    /// A path (/run/netns/x, /proc/PID/ns/net), a name under /run/netns, or pid:PID.
    pub netns: String,
    #[arg(long)]
    pub network: Vec<String>,
    /// Endpoint id (default: derived from NETNS).
    #[arg(long)]
    pub id: Option<String>,
    /// Interface name inside the namespace (default eth0).
    #[arg(long)]
    pub ifname: Option<String>,
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub mac: Option<String>,
    #[arg(long)]
    pub publish: Vec<String>,
    #[arg(long)]
    pub alias: Vec<String>,
    #[arg(long)]
    pub hostname: Option<String>,
}

#[derive(Args, Debug)]
pub struct DetachCmd {
    pub id: String,
    #[arg(long)]
    pub network: Option<String>,
}

#[derive(Args, Debug)]
pub struct PsCmd {
    #[arg(long)]
    pub network: Option<String>,
}

/// A default id for a hand attach: the namespace's name, or `pid-N`.
fn id_from_netns(arg: &str) -> Result<ContainerId, Error> {
    let base = if let Some(pid) = arg.strip_prefix("pid:") {
        format!("pid-{pid}")
    } else {
        let p = std::path::Path::new(arg);
        match p
            .strip_prefix("/proc")
            .ok()
            .and_then(|r| r.components().next())
        {
            Some(pid) => format!("pid-{}", pid.as_os_str().to_string_lossy()),
            None => p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    };
    ContainerId::new(&base).map_err(|_| {
        Error::invalid(
            format!("netns {arg}"),
            "gives no usable endpoint id",
            "pass --id ID",
        )
    })
}

/// Setuid mode: what a user may not ask for (see `privilege`), and their id rule.
fn user_checks(caller: &Caller, c: &AttachCmd) -> Result<ContainerId, Error> {
    let refuse = |flag: &str, why: &str| {
        Error::invalid(
            flag.to_string(),
            format!("is not allowed in setuid mode ({why})"),
            format!("leave out {flag}, or ask root to attach"),
        )
    };
    if !c.publish.is_empty() {
        return Err(refuse("--publish", "host ports are the admin's"));
    }
    if c.mac.is_some() {
        return Err(refuse("--mac", "a MAC could impersonate another container"));
    }
    if !c.alias.is_empty() {
        return Err(refuse(
            "--alias",
            "names could take other containers' DNS names",
        ));
    }
    let prefix = format!("{}-", caller.name);
    match &c.id {
        Some(i) if i.starts_with(&prefix) => ContainerId::new(i),
        Some(i) => Err(Error::invalid(
            format!("--id {i}"),
            format!("does not start with {prefix:?}: a user's endpoint ids carry their name"),
            format!("use --id {prefix}{i}"),
        )),
        None => {
            let base = id_from_netns(&c.netns)?;
            ContainerId::new(&format!("{prefix}{base}"))
        }
    }
}

pub fn attach(dirs: &Dirs, format: Format, c: &AttachCmd) -> anyhow::Result<()> {
    let caller = privilege::caller();
    let (path, pinned, id) = match caller {
        Some(u) => {
            let id = user_checks(u, c)?;
            let (path, ns) = privilege::open_user_netns(u, &c.netns)?;
            (path, Some(std::sync::Arc::new(ns)), id)
        }
        None => {
            let id = match &c.id {
                Some(i) => ContainerId::new(i)?,
                None => id_from_netns(&c.netns)?,
            };
            (netns::resolve_arg(&c.netns)?, None, id)
        }
    };
    let args = HookArgs {
        networks: c.network.clone(),
        publish: c.publish.clone(),
        ip: c.ip.clone(),
        mac: c.mac.clone(),
        aliases: c.alias.clone(),
    };
    let wants = oci::wants(&args, &Default::default(), DEFAULT_NETWORK)?;
    let hostname = c.hostname.clone().unwrap_or_else(|| id.to_string());
    oci::check_dns_name("hostname", &hostname)?;
    let ifname = c.ifname.as_deref().map(IfName::new).transpose()?;
    let req = AttachRequest {
        id,
        netns: path,
        hostname,
        wants,
        ifname,
        files: None,
        source: "attach",
        pinned,
        owner: caller.map(|u| u.uid),
        container_pid: None,
    };
    let ep = match caller {
        Some(u) => {
            // The quota is counted and used under the user's lock.
            let _l = Lock::acquire(&dirs.user_lock(u.uid))?;
            privilege::check_quota(dirs, u, &req.wants.networks)?;
            do_attach(dirs, &req)?
        }
        None => do_attach(dirs, &req)?,
    };
    match format {
        Format::Json => output::json(&ps_rows(&[ep])),
        Format::Table => {
            for a in &ep.attachments {
                println!(
                    "{} {} {} {}/{} {}",
                    ep.id, a.network, a.interface, a.ipv4, a.prefix_len, a.mac
                );
            }
        }
    }
    Ok(())
}

pub fn detach(dirs: &Dirs, c: &DetachCmd) -> anyhow::Result<()> {
    let id = ContainerId::new(&c.id)?;
    let net = c.network.as_deref().map(NetworkName::new).transpose()?;
    if let Some(u) = privilege::caller() {
        if let Some(ep) = endpoint::load(dirs, &id)? {
            if ep.owner != Some(u.uid) {
                return Err(Error::invalid(
                    format!("endpoint {id}"),
                    format!("is not one of user {}'s", u.name),
                    "detach only your own endpoints ('nethook ps' lists them)",
                )
                .into());
            }
        }
    }
    do_detach(dirs, &id, net.as_ref(), LinkCleanup::Wait)?;
    Ok(())
}

/// One `ps` row per attachment, in the JSON shape DESIGN.md section 9 fixes.
#[derive(serde::Serialize)]
struct PsRow {
    id: String,
    network: String,
    interface: String,
    host_interface: String,
    ipv4: Vec<String>,
    ipv6: Vec<String>,
    mac: String,
    ports: Vec<String>,
    netns: String,
    state: String,
    hostname: String,
}

fn ps_rows(eps: &[endpoint::Endpoint]) -> Vec<PsRow> {
    let mut rows = Vec::new();
    for e in eps {
        for a in &e.attachments {
            rows.push(PsRow {
                id: e.id.to_string(),
                network: a.network.to_string(),
                interface: a.interface.to_string(),
                host_interface: if a.driver.bridged() {
                    a.host_interface.to_string()
                } else {
                    String::new()
                },
                ipv4: vec![format!("{}/{}", a.ipv4, a.prefix_len)],
                ipv6: match (a.ipv6, a.prefix_len6) {
                    (Some(ip), Some(p)) => vec![format!("{ip}/{p}")],
                    _ => vec![],
                },
                mac: a.mac.to_string(),
                ports: if a.ipv4 == e.attachments[0].ipv4 {
                    e.ports.iter().map(|p| p.to_string()).collect()
                } else {
                    vec![]
                },
                netns: e.netns.clone(),
                state: e.state.to_string(),
                hostname: e.hostname.clone(),
            });
        }
        if let Some(m) = &e.netmode {
            // Host and none endpoints: one row, no interface of their own.
            rows.push(PsRow {
                id: e.id.to_string(),
                network: m.to_string(),
                interface: String::new(),
                host_interface: String::new(),
                ipv4: vec![],
                ipv6: vec![],
                mac: String::new(),
                ports: vec![],
                netns: e.netns.clone(),
                state: e.state.to_string(),
                hostname: e.hostname.clone(),
            });
        }
    }
    rows
}

pub fn ps(dirs: &Dirs, format: Format, c: &PsCmd) -> anyhow::Result<()> {
    let filter = c.network.as_deref().map(NetworkName::new).transpose()?;
    let mut eps = endpoint::list(dirs)?;
    if let Some(u) = privilege::caller() {
        // A user sees only their own endpoints.
        eps.retain(|e| e.owner == Some(u.uid));
    }
    let mut rows = ps_rows(&eps);
    if let Some(f) = &filter {
        rows.retain(|r| r.network == f.as_str());
    }
    output::listing(
        format,
        &rows,
        &[
            "ID",
            "NETWORK",
            "INTERFACE",
            "ADDRESSES",
            "MAC",
            "PORTS",
            "NETNS",
            "STATE",
        ],
        |r| {
            vec![
                r.id.clone(),
                r.network.clone(),
                r.interface.clone(),
                r.ipv4
                    .iter()
                    .chain(&r.ipv6)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
                r.mac.clone(),
                if r.ports.is_empty() {
                    "-".into()
                } else {
                    r.ports.join(",")
                },
                r.netns.clone(),
                r.state.clone(),
            ]
        },
    );
    // Under the table (the JSON list keeps its fixed shape; `dns status` has it as JSON): the
    // DNS daemon that serves these endpoints' names.
    if format == Format::Table && !rows.is_empty() {
        let st = crate::dns::status(dirs);
        match st.pid {
            Some(pid) => println!(
                "dns daemon: running, pid {pid}, port {}, listeners: {} on gateways, {} in containers",
                st.port, st.listeners.gateways, st.listeners.in_container
            ),
            None => println!("dns daemon: not running"),
        }
    }
    Ok(())
}

pub fn check(dirs: &Dirs, format: Format, id: Option<&str>) -> anyhow::Result<()> {
    let found = crate::ops::health::check(dirs, id)?;
    match format {
        Format::Json => output::json(&found),
        Format::Table => {
            for f in &found {
                println!("{}: {}", f.id, f.problem);
            }
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("check: {} problem(s) found; run 'nethook gc' for gone containers, 'nethook restore' for the rest", found.len()))
    }
}

pub fn gc(dirs: &Dirs, format: Format, dry_run: bool) -> anyhow::Result<()> {
    let found = crate::ops::health::gc(dirs, dry_run)?;
    match format {
        Format::Json => output::json(&found),
        Format::Table => {
            for f in &found {
                println!(
                    "{}{}: {}",
                    if dry_run {
                        "would release "
                    } else {
                        "released "
                    },
                    f.id,
                    f.problem
                );
            }
        }
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum PortCmd {
    /// List published ports, of one endpoint or all.
    #[command(alias = "list")]
    Ls { id: Option<String> },
}

/// One `port ls` row, in the JSON shape DESIGN.md section 9 fixes.
#[derive(serde::Serialize)]
struct PortRow {
    id: String,
    host_ip: String,
    host_port: u16,
    container_ip: String,
    container_port: u16,
    protocol: String,
}

pub fn port(dirs: &Dirs, format: Format, c: &PortCmd) -> anyhow::Result<()> {
    let PortCmd::Ls { id } = c;
    let id = id.as_deref().map(ContainerId::new).transpose()?;
    let mut rows = Vec::new();
    for e in endpoint::list(dirs)? {
        if id.as_ref().is_some_and(|i| *i != e.id) {
            continue;
        }
        for p in &e.ports {
            rows.push(PortRow {
                id: e.id.to_string(),
                host_ip: p
                    .host_ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                host_port: p.host_port,
                container_ip: p.container_ip.to_string(),
                container_port: p.container_port,
                protocol: p.protocol.name().to_string(),
            });
        }
    }
    output::listing(format, &rows, &["ID", "PROTO", "HOST", "CONTAINER"], |r| {
        vec![
            r.id.clone(),
            r.protocol.clone(),
            format!("{}:{}", r.host_ip, r.host_port),
            format!("{}:{}", r.container_ip, r.container_port),
        ]
    });
    Ok(())
}
