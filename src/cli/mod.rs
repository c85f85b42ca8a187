//! The command line (DESIGN.md section 2). Parsing and printing only; the work is in `ops`.

mod endpoint;
mod hook;
mod network;
mod output;

use crate::state::{Dirs, DEFAULT_CONFIG_DIR, DEFAULT_RUN_DIR};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "nethook",
    version,
    about = "Container networking for OCI runtimes, as runtime hooks"
)]
pub struct Cli {
    /// Network definitions live here.
    #[arg(long, global = true, env = "NETHOOK_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: std::path::PathBuf,
    /// Endpoints, leases and locks live here (tmpfs).
    #[arg(long, global = true, env = "NETHOOK_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: std::path::PathBuf,
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub format: Format,
    /// More log lines on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Run as an OCI hook (reads the container state JSON on stdin).
    Hook(hook::HookCmd),
    /// Attach a network namespace to a network by hand.
    Attach(endpoint::AttachCmd),
    /// Detach a container (or a hand-attached namespace) by id.
    Detach(endpoint::DetachCmd),
    /// List endpoints.
    Ps(endpoint::PsCmd),
    /// Published ports.
    #[command(subcommand)]
    Port(endpoint::PortCmd),
    /// Compare the records with the kernel; exit 1 on drift.
    Check { id: Option<String> },
    /// Release everything that belongs to containers that are gone.
    Gc {
        #[arg(long)]
        dry_run: bool,
    },
    /// Kernel features, forwarding, conflicting firewalls: what blocks networking and what to do.
    Doctor,
    /// Re-create bridges and the nftables table after a reboot or a firewall flush.
    Restore,
    /// Print the version.
    Version,
}

/// Parse, run, print the error as one line; returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let dirs = Dirs::new(&cli.config_dir, &cli.run_dir);
    let r = match &cli.command {
        Command::Network(c) => network::run(&dirs, cli.format, c),
        Command::Hook(c) => hook::run(&dirs, c),
        Command::Attach(c) => endpoint::attach(&dirs, cli.format, c),
        Command::Detach(c) => endpoint::detach(&dirs, c),
        Command::Ps(c) => endpoint::ps(&dirs, cli.format, c),
        Command::Port(c) => endpoint::port(&dirs, cli.format, c),
        Command::Check { id } => endpoint::check(&dirs, cli.format, id.as_deref()),
        Command::Gc { dry_run } => endpoint::gc(&dirs, cli.format, *dry_run),
        Command::Doctor => doctor(&dirs, cli.format),
        Command::Restore => crate::ops::health::restore(&dirs).map_err(Into::into),
        Command::Version => {
            println!("nethook {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            // One line: the library's messages already carry what, why and what to do.
            let msg = e.to_string().replace('\n', " ");
            eprintln!("nethook: {msg}");
            1
        }
    }
}

fn doctor(dirs: &Dirs, format: Format) -> anyhow::Result<()> {
    use crate::ops::doctor::{run, Level};
    let items = run(dirs);
    match format {
        Format::Json => output::json(&items),
        Format::Table => {
            for i in &items {
                let tag = match i.level {
                    Level::Ok => "ok  ",
                    Level::Warn => "warn",
                    Level::Fail => "FAIL",
                };
                println!("{tag}  {:<14} {}", i.check, i.detail);
            }
        }
    }
    let fails = items.iter().filter(|i| i.level == Level::Fail).count();
    if fails > 0 {
        anyhow::bail!("doctor: {fails} check(s) failed; fix what is marked FAIL")
    }
    Ok(())
}
