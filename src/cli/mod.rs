//! The command line (DESIGN.md section 2). Parsing and printing only; the work is in `ops`.

mod cluster;
mod dns;
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
    /// The container DNS daemon: `serve` (started by the hook), `status`.
    #[command(subcommand)]
    Dns(dns::DnsCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    Man,
    /// Print the version.
    Version,
    /// This host's overlay settings: `join` an etcd cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// The overlay agent: watches etcd, programs routes, neighbours and FDB.
    Agent(cluster::AgentArgs),
}

/// Parse, run, print the error as one line; returns the exit code.
pub fn main() -> i32 {
    // Setuid mode first, before clap reads the environment (`privilege` module doc).
    let caller = if crate::privilege::setuid_mode() {
        match crate::privilege::enter() {
            Ok(c) => Some(c),
            Err(e) => return report(e.into()),
        }
    } else {
        None
    };
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let dirs = match caller {
        None => Dirs::new(&cli.config_dir, &cli.run_dir),
        Some(c) => {
            if let Some(what) = crate::privilege::refuse_command(&cli.command) {
                return report(crate::privilege::command_refused(c, what).into());
            }
            for (id, flag) in [("config_dir", "--config-dir"), ("run_dir", "--run-dir")] {
                if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
                    eprintln!(
                        "nethook: {flag} is ignored in setuid mode; the compiled-in directories are used"
                    );
                }
            }
            match crate::privilege::dirs() {
                Ok(d) => d,
                Err(e) => return report(e.into()),
            }
        }
    };
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
        Command::Dns(c) => dns::run(&dirs, cli.format, c),
        Command::Completions { shell } => completions(*shell),
        Command::Man => man(),
        Command::Cluster(c) => cluster::run(&dirs, cli.format, c),
        Command::Agent(a) => cluster::agent(&dirs, a),
        Command::Version => {
            println!("nethook {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => report(e),
    }
}

/// Print an error as one line; returns exit code 1.
fn report(e: anyhow::Error) -> i32 {
    // One line: the library's messages already carry what, why and what to do.
    let msg = e.to_string().replace('\n', " ");
    eprintln!("nethook: {msg}");
    1
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

/// `nethook completions SHELL`: generated from the same clap definition the parser uses.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "nethook", &mut buf);
    write_stdout(&buf, "the completion script")
}

/// `nethook man`: the man page, nethook(1), in roff. One page for the whole CLI: clap_mangen's
/// header, synopsis and global options, then every command (`nethook network create`, ...) with
/// its own synopsis and options, then environment, files, annotations and exit status.
fn man() -> anyhow::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let page = clap_mangen::Man::new(cmd.clone());
    let render = |buf: &mut Vec<u8>| -> std::io::Result<()> {
        page.render_title(buf)?;
        page.render_name_section(buf)?;
        page.render_synopsis_section(buf)?;
        page.render_description_section(buf)?;
        page.render_options_section(buf)?;
        buf.extend_from_slice(man_commands(&cmd).as_bytes());
        buf.extend_from_slice(MAN_TRAILER.as_bytes());
        page.render_version_section(buf)
    };
    let mut buf = Vec::new();
    render(&mut buf)
        .map_err(|e| anyhow::anyhow!("rendering the man page: {e}; report this as a bug"))?;
    write_stdout(&buf, "the man page")
}

/// Escape text for roff: backslashes, hyphens (so they stay ASCII), and a leading `.` or `'`.
fn roff_escape(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The COMMANDS section: one subsection per leaf command, with its synopsis and options.
fn man_commands(root: &clap::Command) -> String {
    fn walk(c: &clap::Command, path: &str, out: &mut String) {
        for sub in c.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{path} {}", sub.get_name());
            if sub.has_subcommands() {
                walk(sub, &name, out);
                continue;
            }
            let usage = sub.clone().bin_name(&name).render_usage().to_string();
            let usage = usage.trim().trim_start_matches("Usage:").trim();
            out.push_str(&format!(".SS \"{}\"\n", roff_escape(usage)));
            if let Some(about) = sub.get_long_about().or(sub.get_about()) {
                out.push_str(&format!(".PP\n{}\n", roff_escape(&about.to_string())));
            }
            for a in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = a.get_id().as_str().to_uppercase();
                let value = a
                    .get_value_names()
                    .map(|v| {
                        v.iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or(id);
                let takes_value = a.get_action().takes_values();
                let mut head = Vec::new();
                if let Some(s) = a.get_short() {
                    head.push(format!("\\fB\\-{s}\\fR"));
                }
                if let Some(l) = a.get_long() {
                    head.push(format!("\\fB\\-\\-{}\\fR", roff_escape(l)));
                }
                let mut line = head.join(", ");
                if takes_value {
                    if !line.is_empty() {
                        line.push(' ');
                    }
                    line.push_str(&format!("\\fI{}\\fR", roff_escape(&value)));
                }
                out.push_str(&format!(".TP\n{line}\n"));
                let mut text = a
                    .get_long_help()
                    .or(a.get_help())
                    .map(|h| roff_escape(&h.to_string()))
                    .unwrap_or_default();
                let values: Vec<String> = a
                    .get_possible_values()
                    .iter()
                    .filter(|v| !v.is_hide_set())
                    .map(|v| roff_escape(v.get_name()))
                    .collect();
                if takes_value && !values.is_empty() {
                    text.push_str(&format!(" [one of: {}]", values.join(", ")));
                }
                out.push_str(if text.is_empty() { "\\&" } else { text.trim() });
                out.push('\n');
            }
        }
    }
    let mut out = String::from(".SH COMMANDS\n");
    walk(root, root.get_name(), &mut out);
    out
}

const MAN_TRAILER: &str = r#".SH ANNOTATIONS
OCI annotations in config.json (or podman's \fB\-\-annotation\fR) override the hook's arguments:
.TP
\fBnethook.network\fR
comma list of network names; the first gets the default route (default: \fBnethook\fR)
.TP
\fBnethook.publish\fR
comma list of publish specs, as with \fBdocker run \-p\fR:
.br
\fI[HOST_IP:][HOST_PORT[\-END]:]CONTAINER_PORT[\-END][/tcp|udp|sctp]\fR
.TP
\fBnethook.ip\fR
\fIIP\fR, or \fINET=IP,NET=IP\fR for several networks
.TP
\fBnethook.mac\fR
MAC address of the first interface
.TP
\fBnethook.aliases\fR
comma list of extra DNS names
.TP
\fBnethook.disable\fR
\fBtrue\fR: the hook does nothing
.SH ENVIRONMENT
.TP
\fBNETHOOK_CONFIG_DIR\fR
the config dir, as \fB\-\-config\-dir\fR
.TP
\fBNETHOOK_RUN_DIR\fR
the run dir, as \fB\-\-run\-dir\fR
.PP
Installed setuid root and run by another user, nethook empties its environment and ignores
both, and \fB\-\-config\-dir\fR/\fB\-\-run\-dir\fR too: the compiled\-in directories are used,
\fIusers.conf\fR there says who may attach how many interfaces to which network.
.SH FILES
.TP
\fI/etc/nethook/networks/NAME.json\fR
network definitions
.TP
\fI/etc/nethook/users.conf\fR
setuid use: one rule a line, \fIUSER NETWORK MAX\fR or \fI@GROUP NETWORK MAX\fR
.TP
\fI/run/nethook/\fR
endpoints, address leases and locks (tmpfs: gone at reboot, with the containers)
.TP
\fI/usr/share/containers/oci/hooks.d/50\-nethook\-*.json\fR
podman's hooks: nethook runs for containers with a \fBnethook.network\fR annotation
.SH EXIT STATUS
0 done; 1 the operation failed (one line on stderr: what, why, what to do); 2 usage error.
\fBnethook check\fR exits 1 when the records and the kernel disagree.
.SH SEE ALSO
\fBrunc\fR(8), \fBcrun\fR(1), \fBpodman\fR(1), \fBoci\-hooks\fR(5), \fBnft\fR(8), \fBip\fR(8)
"#;

fn write_stdout(buf: &[u8], what: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(buf)
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("writing {what} to stdout: {e}; check where stdout goes"))
}
