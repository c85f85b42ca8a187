//! `nethook network ...`

use super::output;
use super::Format;
use crate::config::{self, NetworkSpec};
use crate::names::NetworkName;
use crate::netlink::route::RouteSocket;
use crate::ops;
use crate::state::{endpoint, Dirs};
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network.
    Create(Box<CreateArgs>),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only networks matching: label=KEY, label=KEY=VALUE, driver=NAME, name=NAME
        /// (repeatable; all must match).
        #[arg(long, short = 'f', value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// Add a running container to one more network (a new interface, live).
    Connect {
        network: String,
        id: String,
        /// A static IPv4 address on that network.
        #[arg(long)]
        ip: Option<String>,
    },
    /// Take a running container off one of its networks (its interface goes, live).
    Disconnect { network: String, id: String },
    /// Show networks in full.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while endpoints use them, unless --force).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Detach the endpoints that use it first.
        #[arg(long)]
        force: bool,
    },
}

impl NetworkCmd {
    /// `network ls` (what setuid mode allows of this group).
    pub fn is_ls(&self) -> bool {
        matches!(self, NetworkCmd::Ls { .. })
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    #[arg(long)]
    pub driver: Option<String>,
    #[arg(long)]
    pub subnet: Vec<String>,
    #[arg(long)]
    pub gateway: Vec<String>,
    #[arg(long)]
    pub ip_range: Option<String>,
    #[arg(long)]
    pub ipv6: bool,
    #[arg(long)]
    pub internal: bool,
    #[arg(long)]
    pub no_dns: bool,
    /// Name server for names the network's DNS does not own (repeatable, at most 3; default:
    /// the host's resolv.conf servers).
    #[arg(long = "dns-upstream", value_name = "IP")]
    pub dns_upstream: Vec<String>,
    #[arg(long)]
    pub no_masquerade: bool,
    #[arg(long)]
    pub isolate: Option<bool>,
    #[arg(long)]
    pub icc: Option<bool>,
    #[arg(long)]
    pub mtu: Option<u32>,
    #[arg(long)]
    pub bridge: Option<String>,
    /// The host interface a macvlan network's containers hang off.
    #[arg(long)]
    pub parent: Option<String>,
    /// macvlan mode: bridge (default), private, vepa or passthru.
    #[arg(long)]
    pub mode: Option<String>,
    #[arg(long)]
    pub label: Vec<String>,
    /// A network option KEY=VALUE (repeatable): allow_host_ports, dns_listen, mtu,
    /// sysctl.NAME, offload.NAME, bandwidth.ingress|egress, or your own.
    #[arg(long, short = 'o')]
    pub opt: Vec<String>,
    /// Overlay: the VXLAN network identifier (default: derived from the name).
    #[arg(long)]
    pub vni: Option<u32>,
    /// Overlay: prefix length of each host's address block (default 24).
    #[arg(long)]
    pub block_prefix: Option<u8>,
}

pub fn run(dirs: &Dirs, format: Format, cmd: &NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Create(a) => {
            let spec = NetworkSpec {
                name: a.name.clone(),
                driver: a.driver.clone(),
                subnets: a.subnet.clone(),
                gateways: a.gateway.clone(),
                ip_range: a.ip_range.clone(),
                ipv6: a.ipv6,
                internal: a.internal,
                no_dns: a.no_dns,
                dns_upstreams: a.dns_upstream.clone(),
                no_masquerade: a.no_masquerade,
                isolate: a.isolate,
                icc: a.icc,
                mtu: a.mtu,
                bridge: a.bridge.clone(),
                parent: a.parent.clone(),
                macvlan_mode: a.mode.clone(),
                labels: a.label.clone(),
                opts: a.opt.clone(),
                vni: a.vni,
                block_prefix: a.block_prefix,
            };
            // The host's addresses, routes and links: a free subnet when none is given, the
            // macvlan parent's existence and MTU.
            let host = RouteSocket::open()?;
            let net = ops::network::create(dirs, &spec, Some(&host))?;
            match format {
                Format::Json => output::json(&net),
                Format::Table => println!("{}", net.name),
            }
        }
        NetworkCmd::Connect { network, id, ip } => {
            let id = crate::names::ContainerId::new(id)?;
            let name = NetworkName::new(network)?;
            let mut wants = crate::oci::Wants::default();
            if let Some(ip) = ip {
                wants
                    .ips
                    .insert(name.clone(), config::parse_ipv4("static address", ip)?);
            }
            let ep = ops::attach::connect(dirs, &id, &name, &wants)?;
            match format {
                Format::Json => output::json(&ep),
                Format::Table => {
                    if let Some(a) = ep.attachments.iter().find(|a| a.network == name) {
                        println!("{} {} {}", a.interface, a.ipv4, name);
                    }
                }
            }
        }
        NetworkCmd::Disconnect { network, id } => {
            let id = crate::names::ContainerId::new(id)?;
            let name = NetworkName::new(network)?;
            ops::detach::disconnect(dirs, &id, &name)?;
        }
        NetworkCmd::Ls { filter } => {
            let filters = filter
                .iter()
                .map(|f| Filter::parse(f))
                .collect::<Result<Vec<_>, _>>()?;
            let nets: Vec<_> = config::list(dirs)?
                .into_iter()
                .filter(|n| filters.iter().all(|f| f.matches(n)))
                .collect();
            match format {
                Format::Json => output::json(&nets),
                Format::Table => {
                    let eps = endpoint::list(dirs)?;
                    let rows: Vec<Vec<String>> = nets
                        .iter()
                        .map(|n| {
                            let count = eps
                                .iter()
                                .filter(|e| e.attachments.iter().any(|a| a.network == n.name))
                                .count();
                            let count = count
                                + eps
                                    .iter()
                                    .filter(|e| e.netmode.as_ref() == Some(&n.name))
                                    .count();
                            let mut subnet = n
                                .subnets
                                .first()
                                .map(|s| s.subnet.to_string())
                                .unwrap_or_else(|| "-".into());
                            let mut gateway = n
                                .subnets
                                .first()
                                .map(|s| s.gateway.to_string())
                                .unwrap_or_else(|| "-".into());
                            if let Some(s6) = n.subnet6() {
                                subnet.push_str(&format!(",{}", s6.subnet));
                                gateway.push_str(&format!(",{}", s6.gateway));
                            }
                            let link = match (&n.bridge, &n.parent) {
                                (Some(b), _) => b.to_string(),
                                (None, Some(p)) => format!("parent {p}"),
                                (None, None) => "-".into(),
                            };
                            vec![
                                n.name.to_string(),
                                n.driver.to_string(),
                                subnet,
                                gateway,
                                link,
                                count.to_string(),
                            ]
                        })
                        .collect();
                    output::table(
                        &["NAME", "DRIVER", "SUBNET", "GATEWAY", "BRIDGE", "ENDPOINTS"],
                        &rows,
                    );
                }
            }
        }
        NetworkCmd::Inspect { names } => {
            let mut nets = Vec::new();
            for n in names {
                nets.push(config::load_existing(dirs, &NetworkName::new(n)?)?);
            }
            match format {
                Format::Json => output::json(&nets),
                Format::Table => {
                    for (i, n) in nets.iter().enumerate() {
                        if i > 0 {
                            println!();
                        }
                        println!("name:        {}", n.name);
                        println!("driver:      {}", n.driver);
                        for s in &n.subnets {
                            println!("subnet:      {}", s.subnet);
                            println!("gateway:     {}", s.gateway);
                            if let Some(r) = s.ip_range {
                                println!("ip range:    {r}");
                            }
                        }
                        for s in &n.subnets6 {
                            println!("subnet:      {}", s.subnet);
                            println!("gateway:     {}", s.gateway);
                        }
                        if let (Some(b), Some(m)) = (&n.bridge, &n.bridge_mac) {
                            println!("bridge:      {b} ({m})");
                        }
                        if let Some(p) = &n.parent {
                            let mode = n.macvlan_mode.map(|m| format!("{m:?}").to_lowercase());
                            println!("parent:      {p} (mode {})", mode.unwrap_or_default());
                        }
                        println!("internal:    {}", n.internal);
                        println!("masquerade:  {}", n.masquerade);
                        println!("dns:         {}", n.dns);
                        if !n.dns_upstreams.is_empty() {
                            let ups: Vec<String> =
                                n.dns_upstreams.iter().map(|u| u.to_string()).collect();
                            println!("dns upstream: {}", ups.join(", "));
                        }
                        if let Some(m) = n.mtu {
                            println!("mtu:         {m}");
                        }
                        for (k, v) in &n.labels {
                            println!("label:       {k}={v}");
                        }
                        for (k, v) in &n.options {
                            println!("option:      {k}={v}");
                        }
                    }
                }
            }
        }
        NetworkCmd::Rm { names, force } => {
            // Validate every name before removing any.
            let parsed: Vec<NetworkName> = names
                .iter()
                .map(|n| NetworkName::new(n))
                .collect::<Result<_, _>>()?;
            for n in &parsed {
                ops::network::remove(dirs, n, *force)?;
                if format == Format::Table {
                    println!("{n}");
                }
            }
        }
    }
    Ok(())
}

/// One `network ls --filter` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Label(String, Option<String>),
    Driver(String),
    Name(String),
}

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, crate::error::Error> {
        let bad = || {
            crate::error::Error::invalid(
                format!("filter {s:?}"),
                "is not label=KEY[=VALUE], driver=NAME or name=NAME",
                "write it like --filter label=team=web",
            )
        };
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        if v.is_empty() {
            return Err(bad());
        }
        Ok(match k {
            "label" => match v.split_once('=') {
                Some((lk, lv)) if !lk.is_empty() => Filter::Label(lk.into(), Some(lv.into())),
                Some(_) => return Err(bad()),
                None => Filter::Label(v.into(), None),
            },
            "driver" => Filter::Driver(v.into()),
            "name" => Filter::Name(v.into()),
            _ => return Err(bad()),
        })
    }

    pub fn matches(&self, n: &config::Network) -> bool {
        match self {
            Filter::Label(k, None) => n.labels.contains_key(k),
            Filter::Label(k, Some(v)) => n.labels.get(k) == Some(v),
            Filter::Driver(d) => &n.driver.to_string() == d,
            Filter::Name(m) => n.name.as_str() == m,
        }
    }
}
