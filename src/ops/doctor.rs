//! `doctor`: what in this kernel and namespace helps or blocks networking, and what to do.

use crate::firewall::Firewall;
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
            format!("daemon running, pid {pid}, port {}", dns.port),
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
