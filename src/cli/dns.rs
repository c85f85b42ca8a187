//! `nethook dns serve` (the daemon, started by the hook) and `nethook dns status`.

use super::output;
use super::Format;
use crate::dns;
use crate::state::Dirs;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum DnsCmd {
    /// The DNS daemon (started on demand by the hook; not for people).
    Serve {
        /// A pipe to write one byte to once listening (the spawner waits on it).
        #[arg(long, hide = true)]
        ready_fd: Option<i32>,
    },
    /// Whether the DNS daemon runs, its pid, and how many listeners it has open.
    Status,
}

pub fn run(dirs: &Dirs, format: Format, cmd: &DnsCmd) -> anyhow::Result<()> {
    match cmd {
        DnsCmd::Serve { ready_fd } => {
            let ready = ready_fd.and_then(dns::take_fd);
            dns::server::serve(dirs, ready)?;
        }
        DnsCmd::Status => {
            let st = dns::status(dirs);
            match format {
                Format::Json => output::json(&st),
                Format::Table => match st.pid {
                    Some(pid) => println!(
                        "running pid {pid} port {}, listeners: {} on gateways, {} in containers",
                        st.port, st.listeners.gateways, st.listeners.in_container
                    ),
                    None => println!("not running"),
                },
            }
        }
    }
    Ok(())
}
