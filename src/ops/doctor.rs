//! `doctor`: what in this kernel and namespace helps or blocks networking, and what to do.

use crate::firewall::Firewall;
use crate::netlink::route::{ProbeKind, RouteSocket};
use crate::state::Dirs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Item {
    pub level: Level,
    pub check: &'static str,
    pub detail: String,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn writable_dir(path: &std::path::Path) -> Result<(), String> {
    crate::state::ensure_dir(path).map_err(|e| e.to_string())?;
    let probe = path.join(format!(".doctor.{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Which link kinds the kernel can make, probed in a scratch network namespace owned by a
/// forked child (so nothing appears in, or is left in, the namespace being diagnosed).
fn probe_kernel() -> Vec<(ProbeKind, Result<(), String>)> {
    use std::io::{Read, Write};
    let (mut rd, mut wr) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            return ProbeKind::ALL
                .iter()
                .map(|k| (*k, Err(e.to_string())))
                .collect()
        }
    };
    // SAFETY: single-threaded process; the child only runs code that is safe after fork and
    // leaves with _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(rd);
            let mut out = String::new();
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok();
            let sock = if ok { RouteSocket::open().ok() } else { None };
            for k in ProbeKind::ALL {
                let r = match &sock {
                    Some(s) => s.probe_kind(k),
                    None => Err("cannot make a scratch network namespace".into()),
                };
                out.push_str(&format!("{}\t{}\n", k.name(), r.err().unwrap_or_default()));
            }
            let _ = wr.write_all(out.as_bytes());
            // SAFETY: leave the child without the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(wr);
            let mut text = String::new();
            let _ = rd.read_to_string(&mut text);
            let _ = nix::sys::wait::waitpid(child, None);
            ProbeKind::ALL
                .iter()
                .map(|k| {
                    let line = text
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{}\t", k.name())));
                    let r = match line {
                        Some("") => Ok(()),
                        Some(e) => Err(e.to_string()),
                        None => Err("probe did not answer".to_string()),
                    };
                    (*k, r)
                })
                .collect()
        }
        Err(e) => ProbeKind::ALL
            .iter()
            .map(|k| (*k, Err(e.desc().to_string())))
            .collect(),
    }
}

fn in_path(prog: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

pub fn run(dirs: &Dirs) -> Vec<Item> {
    let mut out = Vec::new();
    let mut add = |level, check, detail: String| {
        out.push(Item {
            level,
            check,
            detail,
        })
    };

    match caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_NET_ADMIN,
    ) {
        Ok(true) => add(Level::Ok, "CAP_NET_ADMIN", "held".into()),
        _ => add(
            Level::Fail,
            "CAP_NET_ADMIN",
            "missing: run nethook as root (or setuid, see the README)".into(),
        ),
    }
    match Firewall::open().and_then(|mut f| f.table_exists()) {
        Ok(true) => add(Level::Ok, "nftables", "table inet nethook present".into()),
        Ok(false) => add(
            Level::Ok,
            "nftables",
            "usable; table inet nethook is made on first attach (or 'nethook restore')".into(),
        ),
        Err(e) => add(Level::Fail, "nftables", format!("{e}")),
    }
    match Firewall::open().and_then(|mut f| f.foreign_forward_drops()) {
        Ok(d) if d.is_empty() => add(Level::Ok, "other firewalls", "no other forward chain with a drop policy".into()),
        Ok(d) => add(
            Level::Warn,
            "other firewalls",
            format!(
                "forward chain(s) with policy drop: {}; their drop wins over nethook's accept, so add an accept for the nethook bridges there (Docker: the DOCKER-USER chain)",
                d.join(", ")
            ),
        ),
        Err(e) => add(Level::Warn, "other firewalls", e.to_string()),
    }
    for (kind, r) in probe_kernel() {
        let needed = matches!(kind, ProbeKind::Bridge | ProbeKind::Veth);
        match r {
            Ok(()) => add(
                Level::Ok,
                kind.name(),
                "the kernel can make these links".into(),
            ),
            Err(e) => add(
                if needed { Level::Fail } else { Level::Warn },
                kind.name(),
                format!(
                    "the kernel refuses this link type ({e}): {}",
                    if needed {
                        "bridge networks cannot work; load the module or use another kernel"
                    } else {
                        "networks of this driver cannot be used here"
                    }
                ),
            ),
        }
    }
    add(
        Level::Ok,
        "macvlan note",
        "the host cannot reach its own macvlan children through the parent interface (a kernel rule); reach them from another host".into(),
    );
    let runtimes: Vec<String> = ["runc", "crun", "podman"]
        .iter()
        .filter_map(|r| in_path(r).map(|p| format!("{r} ({})", p.display())))
        .collect();
    if runtimes.is_empty() {
        add(
            Level::Warn,
            "runtimes",
            "no runc, crun or podman in PATH: nethook attach still works by hand".into(),
        );
    } else {
        add(Level::Ok, "runtimes", runtimes.join(", "));
    }
    let hooks =
        std::path::Path::new("/usr/share/containers/oci/hooks.d/50-nethook-create-runtime.json");
    if hooks.exists() {
        add(
            Level::Ok,
            "podman hooks",
            format!("{} installed", hooks.display()),
        );
    } else if in_path("podman").is_some() {
        add(
            Level::Warn,
            "podman hooks",
            "not installed: run contrib/install.sh so podman runs nethook for annotated containers"
                .into(),
        );
    }
    match read("/proc/sys/net/ipv4/ip_forward").as_deref() {
        Some("1") => add(Level::Ok, "ip_forward", "1".into()),
        Some(v) => add(
            Level::Warn,
            "ip_forward",
            format!("{v}: nethook sets it to 1 on the first non-internal attach"),
        ),
        None => add(
            Level::Fail,
            "ip_forward",
            "cannot read /proc/sys/net/ipv4/ip_forward".into(),
        ),
    }
    match read("/proc/sys/net/bridge/bridge-nf-call-iptables").as_deref() {
        Some("1") => add(
            Level::Ok,
            "br_netfilter",
            "bridged traffic passes the inet forward chain (icc and isolation rules apply to it)"
                .into(),
        ),
        Some(v) => add(
            Level::Warn,
            "br_netfilter",
            format!(
                "bridge-nf-call-iptables={v}: --icc false cannot filter traffic inside a bridge"
            ),
        ),
        None => add(
            Level::Warn,
            "br_netfilter",
            "not loaded: --icc false cannot filter traffic inside a bridge".into(),
        ),
    }
    if read("/proc/net/ip_tables_names").is_some_and(|t| t.lines().any(|l| l == "filter")) {
        add(
            Level::Warn,
            "iptables",
            "a legacy iptables filter table is loaded: if its FORWARD policy is DROP (Docker sets it), forwarded container traffic is dropped there; allow the nethook bridges in DOCKER-USER or FORWARD".into(),
        );
    }
    for (what, dir) in [("config dir", &dirs.config), ("run dir", &dirs.run)] {
        match writable_dir(dir) {
            Ok(()) => add(Level::Ok, what, format!("{} writable", dir.display())),
            Err(e) => add(Level::Fail, what, e),
        }
    }
    match crate::ops::health::check(dirs, None) {
        Ok(f) if f.is_empty() => add(Level::Ok, "endpoints", "records match the kernel".into()),
        Ok(f) => add(
            Level::Warn,
            "endpoints",
            format!("{} problem(s): run 'nethook check' for the list", f.len()),
        ),
        Err(e) => add(Level::Warn, "endpoints", e.to_string()),
    }
    // The container DNS daemon (src/dns): started on demand, so not running is fine unless
    // containers on DNS networks are there.
    let dns = crate::dns::status(dirs);
    match dns.pid {
        Some(pid) => add(
            Level::Ok,
            "dns",
            format!(
                "daemon running, pid {pid}, port {}, listeners: {} on gateways, {} in containers",
                dns.port, dns.listeners.gateways, dns.listeners.in_container
            ),
        ),
        None if crate::dns::records::Loader::new(dirs).load().has_endpoints() => add(
            Level::Warn,
            "dns",
            "daemon not running while containers on networks with DNS exist: their names do not resolve; the next attach or detach starts it".into(),
        ),
        None => add(
            Level::Ok,
            "dns",
            "daemon not running (started by the first container on a network with DNS)".into(),
        ),
    }
    out
}
