//! Where state lives (DESIGN.md section 4): the config dir holds network definitions (durable),
//! the run dir holds endpoints, leases and locks (tmpfs, gone at reboot with the containers).

pub mod endpoint;
pub mod proc;

use crate::error::{Error, Result};
use crate::names::{ContainerId, NetworkName};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_DIR: &str = match option_env!("NETHOOK_SYSCONFDIR") {
    Some(d) => d,
    None => "/etc/nethook",
};
pub const DEFAULT_RUN_DIR: &str = match option_env!("NETHOOK_RUNSTATEDIR") {
    Some(d) => d,
    None => "/run/nethook",
};

/// The two state directories and every path inside them. Nothing else builds state paths.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub config: PathBuf,
    pub run: PathBuf,
}

impl Dirs {
    pub fn new(config: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Self {
        Dirs {
            config: config.into(),
            run: run.into(),
        }
    }
    pub fn networks_dir(&self) -> PathBuf {
        self.config.join("networks")
    }
    pub fn network_file(&self, name: &NetworkName) -> PathBuf {
        self.networks_dir().join(format!("{name}.json"))
    }
    pub fn endpoints_dir(&self) -> PathBuf {
        self.run.join("endpoints")
    }
    pub fn endpoint_file(&self, id: &ContainerId) -> PathBuf {
        self.endpoints_dir().join(format!("{id}.json"))
    }
    /// One file per leased address, named by the address, holding the container id.
    pub fn leases_dir(&self, net: &NetworkName) -> PathBuf {
        self.run.join("leases").join(net.as_str())
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.run.join("locks")
    }
    pub fn network_lock(&self, net: &NetworkName) -> PathBuf {
        self.locks_dir().join(format!("net-{net}.lock"))
    }
    /// Serialises changes to the config dir's network set (create, rm, default creation).
    pub fn config_lock(&self) -> PathBuf {
        self.locks_dir().join("config.lock")
    }
    /// Serialises creation of the nftables base table (rare; element updates need no lock).
    pub fn firewall_lock(&self) -> PathBuf {
        self.locks_dir().join("firewall.lock")
    }
    /// Serialises host-port claims (held for microseconds).
    pub fn ports_lock(&self) -> PathBuf {
        self.locks_dir().join("ports.lock")
    }
    /// Per-user lock of setuid mode: a user's quota check and attach never interleave with
    /// another attach of theirs.
    pub fn user_lock(&self, uid: u32) -> PathBuf {
        self.locks_dir().join(format!("user-{uid}.lock"))
    }
    /// Per-container lock: attach and detach of one id never interleave.
    pub fn container_lock(&self, id: &ContainerId) -> PathBuf {
        self.locks_dir().join(format!("ctr-{id}.lock"))
    }
}

/// Create a directory (and parents) with the given mode, naming it in the error.
pub fn ensure_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::io(
            format!("creating directory {}", path.display()),
            e,
            "check that the parent exists and is writable by root",
        )),
    }
}

/// Write a file atomically: temp file in the same directory, optional fsync, rename, and for a
/// durable write an fsync of the directory too, so a crash leaves the old or the new content,
/// never a torn one.
pub fn atomic_write(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let io = |what: &str, e| {
        Error::io(
            format!("{what} {}", path.display()),
            e,
            "check the directory is writable and not full",
        )
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io("writing", e))?;
    let res = (|| {
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io("writing", e));
    }
    if durable {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Remove a file; a file already gone is success.
pub fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("removing {}", path.display()),
            e,
            "check permissions on the run dir",
        )),
    }
}

/// An exclusive flock, released on drop. Held for the shortest time that keeps the data
/// consistent: allocating an address and writing the record, never across kernel work.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    pub fn acquire(path: &Path) -> Result<Lock> {
        use std::os::unix::fs::MetadataExt;
        let err = |e| {
            Error::io(
                format!("locking {}", path.display()),
                e,
                "check the run dir",
            )
        };
        loop {
            let open = || {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
            };
            let file = match open() {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(d) = path.parent() {
                        ensure_dir(d)?;
                    }
                    open().map_err(err)?
                }
                Err(e) => return Err(err(e)),
            };
            file.lock().map_err(err)?;
            // A holder may have removed the file (remove_on_drop) while we waited: our lock is
            // then on an orphan inode, so start again on the current file.
            let held = file.metadata().map_err(err)?;
            match fs::metadata(path) {
                Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {
                    return Ok(Lock {
                        file,
                        path: path.to_path_buf(),
                    })
                }
                _ => continue,
            }
        }
    }

    /// Release the lock and remove its file (per-container locks must not pile up).
    pub fn release_and_remove(self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// The names in a directory (nothing when it does not exist or cannot be read).
pub fn list_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Read a file to a string; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(
            format!("reading {}", path.display()),
            e,
            "check permissions",
        )),
    }
}
