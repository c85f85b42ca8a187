//! Opening and entering network namespaces.

use crate::error::{Error, Result};
use crate::state::endpoint::NetnsId;
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    pub path: PathBuf,
}

impl Netns {
    /// Open `path` and check that it is a network namespace.
    pub fn open(path: &Path) -> Result<Netns> {
        let file = File::open(path).map_err(|e| {
            Error::io(
                format!("network namespace {}", path.display()),
                e,
                "check that the container or namespace still exists",
            )
        })?;
        let fd: OwnedFd = file.into();
        // SAFETY: ioctl on an fd we own, no pointer argument.
        let kind = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(Error::invalid(
                format!("network namespace {}", path.display()),
                "is not a network namespace",
                "give /proc/PID/ns/net, a /run/netns path or a name under /run/netns",
            ));
        }
        Ok(Netns {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The namespace this thread is in now.
    pub fn current() -> Result<Netns> {
        Netns::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn id(&self) -> Result<NetnsId> {
        let f = File::from(
            self.fd
                .try_clone()
                .map_err(|e| Error::io("duplicating a netns fd", e, "check fd limits"))?,
        );
        let m = f
            .metadata()
            .map_err(|e| Error::io("stat of a netns", e, "check the namespace"))?;
        Ok(NetnsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Another handle on the same namespace (the same kernel object, never a re-open by path).
    pub fn try_clone(&self) -> Result<Netns> {
        Ok(Netns {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| Error::io("duplicating a netns fd", e, "check fd limits"))?,
            path: self.path.clone(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Run `f` with the thread inside this namespace, then come back to `home`.
    pub fn run_in<T>(&self, home: &Netns, f: impl FnOnce() -> Result<T>) -> Result<T> {
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            Error::kernel(
                format!("entering network namespace {}", self.path.display()),
                e.desc(),
                "check CAP_SYS_ADMIN",
            )
        })?;
        let out = f();
        // Coming back must not fail silently: every later step would run in the wrong place.
        if let Err(e) = setns(home.fd.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!(
                "nethook: returning to the host network namespace: {}; aborting",
                e.desc()
            );
            std::process::exit(1);
        }
        out
    }
}

/// Resolve a NETNS argument: a path, a name under /run/netns, or `pid:PID`.
pub fn resolve_arg(arg: &str) -> Result<PathBuf> {
    if let Some(pid) = arg.strip_prefix("pid:") {
        let pid: u32 = pid.parse().map_err(|_| {
            Error::invalid(
                format!("netns {arg:?}"),
                "pid is not a number",
                "write it like pid:1234",
            )
        })?;
        return Ok(PathBuf::from(format!("/proc/{pid}/ns/net")));
    }
    if arg.contains('/') {
        return Ok(PathBuf::from(arg));
    }
    if arg.is_empty() || arg == "." || arg == ".." {
        return Err(Error::invalid(
            format!("netns {arg:?}"),
            "is not a name",
            "give a path or a name under /run/netns",
        ));
    }
    Ok(Path::new("/run/netns").join(arg))
}
