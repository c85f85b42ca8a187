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
    Ls,
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
    #[arg(long)]
    pub label: Vec<String>,
    #[arg(long)]
    pub opt: Vec<String>,
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
                labels: a.label.clone(),
                opts: a.opt.clone(),
            };
            // Without --subnet, pick a free /16 the way the default network does.
            let host = if spec.subnets.is_empty() {
                Some(RouteSocket::open()?)
            } else {
                None
            };
            let net = ops::network::create(dirs, &spec, host.as_ref())?;
            match format {
                Format::Json => output::json(&net),
                Format::Table => println!("{}", net.name),
            }
        }
        NetworkCmd::Ls => {
            let nets = config::list(dirs)?;
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
                            let s = n.subnet4();
                            vec![
                                n.name.to_string(),
                                format!("{:?}", n.driver).to_lowercase(),
                                s.subnet.to_string(),
                                s.gateway.to_string(),
                                n.bridge.to_string(),
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
                        let s = n.subnet4();
                        println!("name:        {}", n.name);
                        println!("driver:      {}", format!("{:?}", n.driver).to_lowercase());
                        println!("subnet:      {}", s.subnet);
                        println!("gateway:     {}", s.gateway);
                        if let Some(r) = s.ip_range {
                            println!("ip range:    {r}");
                        }
                        println!("bridge:      {} ({})", n.bridge, n.bridge_mac);
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
