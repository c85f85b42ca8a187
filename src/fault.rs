//! Fault injection for the crash tests (tests/faults.rs): named points between the steps of
//! the attach and detach transactions where a test can have nethook die by SIGKILL (so no
//! destructor, rollback or lock release in user space runs) or pause.
//!
//! `NETHOOK_FAULT=NAME` kills the process at point NAME; `NETHOOK_FAULT=NAME:sleep=MS` sleeps
//! MS milliseconds there and goes on (to run something else while a transaction is half done).
//! The variable is read once per process.
//!
//! Only debug builds (`cargo build`, `cargo test`) have it: under `--release` (no
//! `debug_assertions`) [`point`] is an empty inline function and the variable is never read,
//! so an installed nethook cannot be made to crash through its environment.

/// Every fault point, in transaction order (the tests iterate them).
pub const POINTS: &[&str] = &[
    // attach (src/ops/attach.rs)
    "attach.record-intent",
    "attach.lease",
    "attach.ports",
    "attach.record",
    "attach.net-rules",
    "attach.bridge",
    // links (src/driver/bridge.rs, src/driver/macvlan.rs)
    "bridge.before-veth",
    "bridge.veth",
    "bridge.configured",
    "macvlan.before-link",
    "macvlan.link",
    // attach, continued
    "attach.firewall",
    "attach.file-hosts",
    "attach.file-hostname",
    "attach.file-resolv",
    "attach.before-ready",
    // detach (src/ops/detach.rs)
    "detach.removing",
    "detach.firewall",
    "detach.links",
    "detach.leases",
];

/// A fault point: dies or sleeps here when `NETHOOK_FAULT` names it (debug builds only).
#[cfg(debug_assertions)]
pub fn point(name: &'static str) {
    use std::sync::OnceLock;
    static FAULT: OnceLock<Option<(String, Option<u64>)>> = OnceLock::new();
    debug_assert!(
        POINTS.contains(&name),
        "fault point {name} is not in POINTS"
    );
    let f = FAULT.get_or_init(|| {
        let v = std::env::var("NETHOOK_FAULT").ok()?;
        match v.split_once(":sleep=") {
            Some((n, ms)) => Some((n.to_string(), ms.parse().ok())),
            None => Some((v, None)),
        }
    });
    match f {
        Some((n, None)) if n == name => {
            // SAFETY: plain syscalls; SIGKILL cannot be caught, nothing runs after it.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        Some((n, Some(ms))) if n == name => {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
        _ => {}
    }
}

/// Release builds: no fault points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &'static str) {}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique() {
        let mut v = super::POINTS.to_vec();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), super::POINTS.len());
    }
}
