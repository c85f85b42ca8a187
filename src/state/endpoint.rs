//! Endpoint records: one JSON file per container in `run/endpoints/ID.json`, written before any
//! kernel change (state `creating`), so a crash at any point leaves a record that `gc` can undo.

use super::{atomic_write, ensure_dir, read_optional, remove_file, Dirs};
use crate::config::DriverKind;
use crate::error::{Error, Result};
use crate::names::{ContainerId, IfName, Mac, NetworkName};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpState {
    Creating,
    Ready,
    Removing,
}

impl std::fmt::Display for EpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EpState::Creating => "creating",
            EpState::Ready => "ready",
            EpState::Removing => "removing",
        })
    }
}

/// One interface of a container on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: NetworkName,
    /// Name inside the container (eth0, eth1, ...).
    pub interface: IfName,
    /// Host-side veth name.
    pub host_interface: IfName,
    pub ipv4: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: Mac,
    /// Whether a masquerade element was added for this address (and the IPv6 one).
    pub masquerade: bool,
    /// How the interface was made (bridge: a veth on the bridge; macvlan: a child of the
    /// network's parent, with no host-side link).
    #[serde(default = "bridge_kind")]
    pub driver: DriverKind,
    /// The IPv6 address of a dual-stack network (derived from `ipv4`), its prefix, gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// The interface's MTU when set (the network's, or the container's `nethook.mtu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Sysctls, offloads and bandwidth limits applied (the network's options, overridden by
    /// the container's annotations).
    #[serde(default, skip_serializing_if = "crate::tuning::Tuning::is_empty")]
    pub tuning: crate::tuning::Tuning,
}

fn bridge_kind() -> DriverKind {
    DriverKind::Bridge
}

/// Identity of a network namespace: (st_dev, st_ino) of its nsfs inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: ContainerId,
    pub state: EpState,
    /// The nethook process that last changed the record (to tell a crashed creator).
    pub pid: u32,
    /// The namespace as given (path), and its identity at attach time.
    pub netns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_id: Option<NetnsId>,
    pub hostname: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Files written for the container (host paths), for the record and for `check`.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// "hook" or "attach": which front door made it.
    pub source: String,
    pub attachments: Vec<Attachment>,
    /// A container on a host- or none-driver network: that network (it has no attachments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmode: Option<NetworkName>,
    /// Published ports (forwarded to the first attachment's address).
    #[serde(default)]
    pub ports: Vec<crate::publish::Published>,
    pub created: u64,
    /// The real uid of the user who attached it through setuid nethook (None: root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
    /// The container's process (the hook's OCI state pid), so gc can tell it is gone when no
    /// link or namespace shows it (host network, a namespace that outlives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<super::proc::ProcId>,
}

pub fn load(dirs: &Dirs, id: &ContainerId) -> Result<Option<Endpoint>> {
    let path = dirs.endpoint_file(id);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::invalid(
            format!("endpoint record {}", path.display()),
            e.to_string(),
            "remove the file and run 'nethook gc'",
        )
    })
}

pub fn save(dirs: &Dirs, ep: &Endpoint) -> Result<()> {
    ensure_dir(&dirs.endpoints_dir())?;
    let json = serde_json::to_vec(ep).expect("endpoint serialises");
    // tmpfs: atomic rename is enough, fsync buys nothing here.
    atomic_write(&dirs.endpoint_file(&ep.id), &json, false)
}

pub fn remove(dirs: &Dirs, id: &ContainerId) -> Result<()> {
    remove_file(&dirs.endpoint_file(id))
}

/// Every record, sorted by id. Unreadable records are reported, not skipped silently.
pub fn list(dirs: &Dirs) -> Result<Vec<Endpoint>> {
    let dir = dirs.endpoints_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::io(
                format!("reading {}", dir.display()),
                e,
                "check the run dir",
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let Ok(id) = ContainerId::new(stem) else {
            continue;
        };
        if let Some(ep) = load(dirs, &id)? {
            out.push(ep);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}
