//! Telling a process apart from a later one that got the same pid: its start time.

use serde::{Deserialize, Serialize};

/// A process: its pid and its start time (clock ticks after boot, field 22 of /proc/PID/stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

/// The start time of process `pid`, from /proc/PID/stat; None when it does not exist.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after the last
    // ')'; the field after it is the 3rd, so starttime (the 22nd) is the 20th of the rest.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl ProcId {
    /// The process `pid` as it is now; None when there is no such process.
    pub fn of(pid: u32) -> Option<ProcId> {
        start_time(pid).map(|start| ProcId { pid, start })
    }
    /// True while this very process exists (not merely one with its pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process() {
        let me = ProcId::of(std::process::id()).expect("own stat");
        assert!(me.alive());
        assert!(!ProcId {
            start: me.start + 1,
            ..me
        }
        .alive());
        assert!(ProcId::of(u32::MAX).is_none());
    }
}
