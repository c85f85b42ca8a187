//! The transactions. Every front door (hook, attach by hand, network rm --force, gc) goes through
//! these, so rollback and teardown are written once.

pub mod attach;
pub mod detach;
pub mod doctor;
pub mod firewall_sync;
pub mod health;
pub mod network;

/// Seconds since the epoch, for records.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// True when a process with this pid exists (a dead creator means a half-made endpoint).
pub fn pid_alive(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}
