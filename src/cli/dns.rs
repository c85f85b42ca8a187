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
    /// Whether the DNS daemon runs, and its pid.
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
                    Some(pid) => println!("running pid {pid} port {}", st.port),
                    None => println!("not running"),
                },
            }
        }
    }
    Ok(())
}
