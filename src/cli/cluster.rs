//! `nethook cluster join` and `nethook agent`.

use super::output;
use super::Format;
use crate::cluster;
use crate::state::Dirs;
use clap::{Args, Subcommand};
use std::net::Ipv4Addr;

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Keep this host's overlay settings (cluster.json) after checking etcd answers.
    Join {
        /// etcd client URLs, comma separated (http://HOST:2379).
        #[arg(long, value_delimiter = ',', required = true)]
        etcd: Vec<String>,
        /// This host's underlay address: the VXLAN tunnel endpoint.
        #[arg(long)]
        vtep_ip: Ipv4Addr,
        /// This host's name in the cluster (default: the host name).
        #[arg(long, alias = "host-name")]
        name: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Seconds this host's key outlives a dead agent (other hosts drop its routes then).
    #[arg(long, default_value_t = 10)]
    pub lease_ttl: u64,
}

pub fn run(dirs: &Dirs, format: Format, cmd: &ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Join {
            etcd,
            vtep_ip,
            name,
        } => {
            let cfg = cluster::join(dirs, etcd, *vtep_ip, name.as_deref())?;
            match format {
                Format::Json => output::json(&cfg),
                Format::Table => println!("{}", cfg.name),
            }
        }
    }
    Ok(())
}

pub fn agent(dirs: &Dirs, a: &AgentArgs) -> anyhow::Result<()> {
    if a.lease_ttl < 2 {
        anyhow::bail!(
            "--lease-ttl {}: is below 2 seconds; give 2 or more",
            a.lease_ttl
        );
    }
    cluster::agent::run(
        dirs,
        &cluster::agent::AgentOpts {
            lease_ttl: a.lease_ttl,
            run_for: None,
        },
    )?;
    Ok(())
}
