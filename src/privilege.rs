//! Setuid mode (issue 7): nethook installed setuid root lets an unprivileged user network their
//! own rootless containers, as lxc-user-nic does for LXC.
//!
//! # When
//! The real uid is not 0 and the effective uid is 0 ([`setuid_mode`]), checked first thing in
//! `main`, before clap reads anything.
//!
//! # What happens at once ([`enter`])
//! - the effective and saved gid become 0 (the real gid stays the user's);
//! - fds 0, 1, 2 are made to exist (`/dev/null`), so no file nethook opens becomes stderr;
//! - the environment is emptied (only `PATH=/usr/sbin:/usr/bin:/sbin:/bin` is set), so
//!   `NETHOOK_CONFIG_DIR`, `NETHOOK_RUN_DIR`, `CNI_COMMAND`, `PATH`, `RUST_*` and the rest
//!   change nothing; the umask becomes 0o022;
//! - capabilities: the bounding set loses everything but [`KEEP`] (CAP_NET_ADMIN for netlink
//!   and nftables, CAP_SYS_ADMIN for setns), the permitted and effective sets become [`KEEP`],
//!   inheritable and ambient are emptied, and `PR_SET_NO_NEW_PRIVS` is set: no exec gets any
//!   capability back. CAP_DAC_OVERRIDE is not kept: the effective uid stays 0, which owns the
//!   config and run dirs, so nethook's own state needs no override; CAP_SYS_PTRACE is not kept
//!   either, so a /proc/PID/ns/net of another user cannot be opened at all.
//!
//! # What the user may do
//! `attach`, `detach`, `ps`, `network ls` (and `version`); every other command is refused with
//! one line. `attach` refuses `--publish` (a host port DNAT could hijack the host's own
//! services), `--mac` (impersonating another container on the bridge) and `--alias` (taking
//! other containers' DNS names). Endpoint ids of a user must start with `USERNAME-` (the
//! default id gets that prefix), so a user cannot take the id of a container root will start.
//! `ps` lists only the user's endpoints and `detach` acts only on them (records carry `owner`).
//! The hook is not a setuid front door: runtimes run hooks as root.
//!
//! # Directories
//! Only the compiled-in config and run dirs ([`crate::state::DEFAULT_CONFIG_DIR`],
//! [`crate::state::DEFAULT_RUN_DIR`], set at build time by `NETHOOK_SYSCONFDIR` and
//! `NETHOOK_RUNSTATEDIR`); `--config-dir`/`--run-dir` are ignored with a warning, the env
//! variables are gone with the environment. Debug builds only (`cfg(debug_assertions)`, which
//! the tests use; a release build has no such code) read [`TEST_DIRS_FILE`] next to the binary
//! when the binary's directory and that file are owned by root and writable by nobody else:
//! only root can put such a file there, and a user cannot hard-link the setuid binary into a
//! directory of theirs that holds one. This is how the tests get a setuid binary using their
//! temp dirs without a second build; an env variable would let any user move the dirs.
//!
//! # The namespace ([`open_user_netns`])
//! The NETNS argument is opened with the real user's rights ([`as_user`]: the effective uid
//! and gid become the real ones around the open, the saved uid stays 0; setfsuid alone is not
//! enough, as the kernel's ptrace-read check for /proc/PID/ns/net asks for CAP_SYS_PTRACE in the
//! target's user namespace, which the user has as its owner and euid 0 has not): another user's
//! process is refused by the kernel. Then, on the open fd (no race),
//! the namespace's owning user namespace must have been created by the real uid
//! (`NS_GET_USERNS` + `NS_GET_OWNER_UID`), as lxc-user-nic does since CVE-2017-5985: a path to
//! root's or another user's netns, and /proc/self/ns/net (nethook's own, the host's: owner 0),
//! are refused. `pid:N` must be a process whose real, effective and saved uids are the user's;
//! it is pinned by a pidfd and checked alive after the open, so a reused pid is never used.
//! The attach then works on that same fd ([`crate::ops::attach::AttachRequest::pinned`]), never
//! re-opening the path as root.
//!
//! # The ACL ([`Acl`], `CONFIG/users.conf`)
//! One rule a line, `USER NETWORK MAX` or `@GROUP NETWORK MAX`, `#` comments and blank lines
//! allowed. USER and GROUP are names (`[a-z_][a-z0-9_.-]*`, an optional trailing `$`), NETWORK a
//! network name, MAX the number of interfaces (0-1000) the user may have on that network at
//! once. A user gets the largest MAX of the rules naming them or a group of theirs (the
//! group database's list, `getgrouplist`). No file, no matching rule: refused. A line that
//! does not parse: refused, naming the file and line. The file must be a regular file owned by
//! root and not writable by group or others, in a directory of the same kind; otherwise it is
//! refused as a whole. The count is taken under a per-user lock, so parallel attaches of one
//! user cannot both pass the last free slot.
//!
//! # Files in the container
//! `nethook attach` writes no rootfs files (no `--rootfs`); the hook, which writes them, runs
//! as root and never writes through a symlink (see [`crate::rootfs`]).
//!
//! # DNS
//! A setuid nethook never starts the DNS daemon (it would need more capabilities); a running
//! daemon is told about the new endpoint as usual. Without one, attach says so on stderr.

use crate::error::{Error, Result};
use crate::names::NetworkName;
use crate::netns::Netns;
use crate::state::{endpoint, Dirs, DEFAULT_CONFIG_DIR, DEFAULT_RUN_DIR};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The capabilities a setuid nethook keeps.
pub const KEEP: [caps::Capability; 2] = [
    caps::Capability::CAP_NET_ADMIN,
    caps::Capability::CAP_SYS_ADMIN,
];

/// The fixed PATH of setuid mode.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Debug builds: the file next to the binary that may move the setuid dirs (see the module doc).
pub const TEST_DIRS_FILE: &str = "nethook-setuid-dirs";

/// The user behind a setuid nethook.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    /// Every group of the user (primary first), from the group database.
    pub groups: Vec<u32>,
}

static CALLER: OnceLock<Caller> = OnceLock::new();

/// Real uid not 0, effective uid 0: started through the setuid bit.
pub fn setuid_mode() -> bool {
    // SAFETY: plain getters.
    unsafe { libc::getuid() != 0 && libc::geteuid() == 0 }
}

/// The caller, once [`enter`] ran (None: not in setuid mode).
pub fn caller() -> Option<&'static Caller> {
    CALLER.get()
}

/// Harden the process (see the module doc). Call before anything else.
pub fn enter() -> Result<&'static Caller> {
    // SAFETY: fcntl/open on the low fds, no memory involved.
    unsafe {
        for fd in 0..3 {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                let n = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if n != fd && n >= 0 {
                    libc::dup2(n, fd);
                    libc::close(n);
                }
            }
        }
        libc::umask(0o022);
    }
    let keys: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in keys {
        std::env::remove_var(k);
    }
    std::env::set_var("PATH", SAFE_PATH);
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // The effective and saved gid become root's (files nethook creates are root's group, and
    // [`as_user`] can switch the effective gid to the real one and back without CAP_SETGID).
    // SAFETY: setresgid with integer arguments; CAP_SETGID is still held here.
    if unsafe { libc::setresgid(gid, 0, 0) } != 0 {
        return Err(Error::kernel(
            "setting the effective gid to root's",
            std::io::Error::last_os_error().to_string(),
            "refusing to go on",
        ));
    }
    drop_caps()?;
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .ok_or_else(|| {
            Error::invalid(
                format!("user {uid}"),
                "is not in the user database",
                "setuid nethook serves only known users",
            )
        })?;
    let mut groups = vec![gid];
    if let Ok(name) = std::ffi::CString::new(user.name.as_str()) {
        if let Ok(gs) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)) {
            for g in gs {
                if !groups.contains(&g.as_raw()) {
                    groups.push(g.as_raw());
                }
            }
        }
    }
    let c = Caller {
        uid,
        gid,
        name: user.name,
        groups,
    };
    Ok(CALLER.get_or_init(|| c))
}

fn drop_caps() -> Result<()> {
    use caps::CapSet;
    let err = |set: &str, e: caps::errors::CapsError| {
        Error::kernel(
            format!("dropping capabilities ({set})"),
            e.to_string(),
            "a setuid nethook needs a kernel with capabilities; refusing to go on",
        )
    };
    for cap in caps::all() {
        if !KEEP.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| err("bounding", e))?;
        }
    }
    let keep: caps::CapsHashSet = KEEP.into_iter().collect();
    caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| err("inheritable", e))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| err("effective", e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| err("permitted", e))?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::kernel(
            "setting no_new_privs",
            std::io::Error::last_os_error().to_string(),
            "refusing to go on",
        ));
    }
    Ok(())
}

/// The directories of setuid mode: the compiled-in ones (debug builds: see [`TEST_DIRS_FILE`]).
pub fn dirs() -> Result<Dirs> {
    #[cfg(debug_assertions)]
    if let Some(d) = test_dirs()? {
        return Ok(d);
    }
    Ok(Dirs::new(DEFAULT_CONFIG_DIR, DEFAULT_RUN_DIR))
}

/// Root-owned and writable by root alone (not a symlink: `meta` comes from lstat or fstat).
fn root_only(meta: &std::fs::Metadata) -> bool {
    meta.uid() == 0 && meta.mode() & 0o022 == 0
}

#[cfg(debug_assertions)]
fn test_dirs() -> Result<Option<Dirs>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return Ok(None);
    };
    let Some(dir) = exe.parent() else {
        return Ok(None);
    };
    let file = dir.join(TEST_DIRS_FILE);
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file)
    else {
        return Ok(None);
    };
    let bad = || {
        Error::invalid(
            format!("{}", file.display()),
            "is not a root-owned file in a root-owned directory writable by root alone",
            "remove it",
        )
    };
    let dmeta = std::fs::symlink_metadata(dir).map_err(|_| bad())?;
    let fmeta = f.metadata().map_err(|_| bad())?;
    if !dmeta.is_dir() || !root_only(&dmeta) || !fmeta.is_file() || !root_only(&fmeta) {
        return Err(bad());
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(|_| bad())?;
    let (mut config, mut run) = (None, None);
    for line in text.lines() {
        match line.split_once('=') {
            Some(("config", v)) if v.starts_with('/') => config = Some(PathBuf::from(v)),
            Some(("run", v)) if v.starts_with('/') => run = Some(PathBuf::from(v)),
            _ if line.trim().is_empty() => {}
            _ => return Err(bad()),
        }
    }
    match (config, run) {
        (Some(c), Some(r)) => Ok(Some(Dirs::new(c, r))),
        _ => Err(bad()),
    }
}

/// The commands a user may run through the setuid bit; `None`: allowed, `Some(name)`: refused.
pub fn refuse_command(cmd: &crate::cli::Command) -> Option<&'static str> {
    use crate::cli::Command as C;
    match cmd {
        C::Attach(_) | C::Detach(_) | C::Ps(_) | C::Version => None,
        C::Network(n) if n.is_ls() => None,
        C::Network(_) => Some("network (other than ls)"),
        C::Hook(_) => Some("hook"),
        C::Port(_) => Some("port"),
        C::Check { .. } => Some("check"),
        C::Gc { .. } => Some("gc"),
        C::Doctor => Some("doctor"),
        C::Restore => Some("restore"),
        C::Dns(_) => Some("dns"),
        C::Completions { .. } => Some("completions"),
        C::Man => Some("man"),
        C::Cluster(_) => Some("cluster"),
        C::Agent(_) => Some("agent"),
    }
}

/// The refusal for a command not allowed in setuid mode.
pub fn command_refused(caller: &Caller, what: &str) -> Error {
    Error::invalid(
        what.to_string(),
        format!("is not allowed in setuid mode (real user {})", caller.name),
        "a user may run attach, detach, ps and network ls; run the rest as root",
    )
}

// ---- file-system rights of the real user -------------------------------------------------

/// Run `f` with the caller's effective (and so file-system) uid and gid, then back to root's.
/// The saved uid stays 0, which is what allows the way back; the effective capabilities are
/// empty meanwhile (the kernel clears them when the effective uid leaves 0, and restores the
/// permitted ones when it comes back). So `f` has exactly the user's rights: opening
/// /proc/PID/ns/net of a process in the user's user namespace works as it does for the user
/// (the owner of that namespace), another user's or root's is refused. Fails closed.
pub fn as_user<T>(c: &Caller, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let fail = |what: &str| {
        Error::kernel(
            format!("switching to the user's ids ({what})"),
            std::io::Error::last_os_error().to_string(),
            "refusing to open the path as root",
        )
    };
    // SAFETY: set*id calls with integer arguments; -1 (as id_t) keeps an id.
    unsafe {
        if libc::setresgid(u32::MAX, c.gid, u32::MAX) != 0 {
            return Err(fail("gid"));
        }
        if libc::setresuid(u32::MAX, c.uid, u32::MAX) != 0 {
            libc::setresgid(u32::MAX, 0, u32::MAX);
            return Err(fail("uid"));
        }
    }
    let r = f();
    // SAFETY: as above; the saved ids are 0, so coming back is always allowed.
    unsafe {
        if libc::setresuid(u32::MAX, 0, u32::MAX) != 0
            || libc::setresgid(u32::MAX, 0, u32::MAX) != 0
            || libc::geteuid() != 0
        {
            eprintln!("nethook: returning to root's ids failed; aborting");
            std::process::exit(1);
        }
    }
    r
}

// ---- the namespace -----------------------------------------------------------------------

/// `NS_GET_USERNS` and `NS_GET_OWNER_UID` from linux/nsfs.h.
const NS_GET_USERNS: libc::c_ulong = 0xb701;
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// The uid that created the user namespace owning the namespace `fd` refers to.
pub fn owner_uid(ns: &Netns) -> Result<u32> {
    let kerr = |what: &str| {
        Error::kernel(
            format!("{what} of network namespace {}", ns.path.display()),
            std::io::Error::last_os_error().to_string(),
            "give a namespace of your own rootless container",
        )
    };
    // SAFETY: ioctl on an fd we hold; returns a new fd or -1.
    let u = unsafe { libc::ioctl(ns.fd().as_raw_fd(), NS_GET_USERNS as _) };
    if u < 0 {
        return Err(kerr("the owning user namespace"));
    }
    // SAFETY: the kernel just gave us this fd.
    let userns = unsafe { OwnedFd::from_raw_fd(u) };
    let mut uid: libc::uid_t = u32::MAX;
    // SAFETY: ioctl writing one uid_t into our variable.
    if unsafe { libc::ioctl(userns.as_raw_fd(), NS_GET_OWNER_UID as _, &mut uid) } != 0 {
        return Err(kerr("the owner"));
    }
    Ok(uid)
}

/// The real, effective and saved uid of a process (`/proc/PID/status`).
fn proc_uids(pid: u32) -> Option<[u32; 3]> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Uid:"))?;
    let v: Vec<u32> = line[4..]
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

/// A pidfd, so a pid cannot be reused behind our back while it is held.
struct PidFd(OwnedFd);

impl PidFd {
    fn open(pid: u32) -> Option<PidFd> {
        // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: the kernel just gave us this fd.
        (fd >= 0).then(|| PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }
    fn alive(&self) -> bool {
        // SAFETY: signal 0 through a pidfd we hold: only an existence check.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            ) == 0
        }
    }
}

/// Open the user's NETNS argument and prove it is theirs (module doc). Returns the path to
/// record and the open namespace.
pub fn open_user_netns(c: &Caller, arg: &str) -> Result<(PathBuf, Netns)> {
    let refuse = |why: String| {
        Error::invalid(
            format!("netns {arg}"),
            why,
            "give the network namespace of a rootless container of your own (pid:PID of its \
             process, or /proc/PID/ns/net)",
        )
    };
    let path = crate::netns::resolve_arg(arg)?;
    let pidfd = match arg.strip_prefix("pid:") {
        Some(p) => {
            let pid: u32 = p
                .parse()
                .map_err(|_| refuse("pid is not a number".into()))?;
            let pidfd = PidFd::open(pid).ok_or_else(|| refuse(format!("no process {pid}")))?;
            match proc_uids(pid) {
                Some(u) if u.iter().all(|&x| x == c.uid) => {}
                _ => return Err(refuse(format!("process {pid} is not yours"))),
            }
            Some(pidfd)
        }
        None => None,
    };
    let ns = as_user(c, || Netns::open(&path)).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            refuse("you may not open it (not your process or namespace)".into())
        }
        other => other,
    })?;
    if pidfd.as_ref().is_some_and(|p| !p.alive()) {
        return Err(refuse("the process exited while it was opened".into()));
    }
    let owner = owner_uid(&ns)?;
    if owner != c.uid {
        return Err(refuse(if owner == 0 {
            "belongs to root (the host's or a root container's namespace)".to_string()
        } else {
            "belongs to another user".to_string()
        }));
    }
    Ok((path, ns))
}

// ---- the ACL -----------------------------------------------------------------------------

/// Who a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    User(String),
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub who: Who,
    pub network: NetworkName,
    pub max: u32,
}

/// `users.conf`, parsed.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    pub rules: Vec<Rule>,
}

/// The largest MAX a rule may give.
pub const MAX_LIMIT: u32 = 1000;

fn valid_account_name(s: &str) -> bool {
    let s = s.strip_suffix('$').unwrap_or(s);
    let mut ch = s.chars();
    matches!(ch.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 32
        && ch.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

impl Acl {
    /// Parse strictly; `file` names the file in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Acl> {
        let mut rules = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| {
                Error::invalid(
                    format!("{} line {}", file.display(), n + 1),
                    why.to_string(),
                    "write rules as 'USER NETWORK MAX' or '@GROUP NETWORK MAX'",
                )
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let [who, net, max] = f[..] else {
                return Err(bad("needs exactly three fields"));
            };
            let who = match who.strip_prefix('@') {
                Some(g) if valid_account_name(g) => Who::Group(g.to_string()),
                None if valid_account_name(who) => Who::User(who.to_string()),
                _ => return Err(bad("is not a user or @group name")),
            };
            let network = NetworkName::new(net).map_err(|_| bad("has no valid network name"))?;
            let max: u32 = match max.parse() {
                Ok(m) if m <= MAX_LIMIT => m,
                _ => return Err(bad("MAX is not a number from 0 to 1000")),
            };
            rules.push(Rule { who, network, max });
        }
        Ok(Acl { rules })
    }

    /// The ACL of the config dir: refused unless root-owned and writable by root alone.
    pub fn load(dirs: &Dirs) -> Result<Acl> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let file = dirs.config.join("users.conf");
        let none = || {
            Error::invalid(
                format!("{}", file.display()),
                "does not exist, so no user may attach",
                "ask the admin for a rule 'USER NETWORK MAX' in it",
            )
        };
        let unsafe_file = |what: &Path| {
            Error::invalid(
                format!("{}", what.display()),
                "is not owned by root or is writable by others, so it is not trusted",
                "make it root-owned and not group- or world-writable (chown root; chmod go-w)",
            )
        };
        let dmeta = std::fs::symlink_metadata(&dirs.config).map_err(|_| none())?;
        if !dmeta.is_dir() || !root_only(&dmeta) {
            return Err(unsafe_file(&dirs.config));
        }
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&file)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(none()),
            Err(e) => {
                return Err(Error::io(
                    format!("{}", file.display()),
                    e,
                    "check the file",
                ))
            }
        };
        let meta = f
            .metadata()
            .map_err(|e| Error::io(format!("{}", file.display()), e, "check the file"))?;
        if !meta.is_file() || !root_only(&meta) {
            return Err(unsafe_file(&file));
        }
        let mut text = String::new();
        f.take(1 << 20)
            .read_to_string(&mut text)
            .map_err(|e| Error::io(format!("{}", file.display()), e, "check the file"))?;
        Acl::parse(&text, &file)
    }

    /// How many interfaces `c` may have on `net` (None: no rule names them).
    pub fn allowance(
        &self,
        c: &Caller,
        net: &NetworkName,
        group_of: impl Fn(&str) -> Option<u32>,
    ) -> Option<u32> {
        self.rules
            .iter()
            .filter(|r| &r.network == net)
            .filter(|r| match &r.who {
                Who::User(u) => *u == c.name,
                Who::Group(g) => group_of(g).is_some_and(|gid| c.groups.contains(&gid)),
            })
            .map(|r| r.max)
            .max()
    }
}

/// A group's gid from the group database.
pub fn gid_of(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The interfaces `uid`'s endpoints have on `net` now.
pub fn interfaces_on(eps: &[endpoint::Endpoint], uid: u32, net: &NetworkName) -> u32 {
    eps.iter()
        .filter(|e| e.owner == Some(uid))
        .map(|e| {
            e.attachments.iter().filter(|a| &a.network == net).count() as u32
                + u32::from(e.netmode.as_ref() == Some(net))
        })
        .sum()
}

/// Refuse an attach of `c` to `nets` (one interface each) that the ACL does not allow. Call
/// under the caller's lock ([`Dirs::user_lock`]).
pub fn check_quota(dirs: &Dirs, c: &Caller, nets: &[NetworkName]) -> Result<()> {
    let acl = Acl::load(dirs)?;
    let eps = endpoint::list(dirs)?;
    for net in nets {
        let Some(max) = acl.allowance(c, net, gid_of) else {
            return Err(Error::invalid(
                format!("network {net}"),
                format!(
                    "is not granted to user {} in {}",
                    c.name,
                    dirs.config.join("users.conf").display()
                ),
                "ask the admin for a rule 'USER NETWORK MAX' there",
            ));
        };
        let have = interfaces_on(&eps, c.uid, net);
        if have + 1 > max {
            return Err(Error::invalid(
                format!("network {net}"),
                format!(
                    "user {} has {have} of at most {max} interfaces there",
                    c.name
                ),
                "detach one first ('nethook ps' lists yours)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            uid: 1000,
            gid: 1000,
            name: "alice".into(),
            groups: vec![1000, 2000],
        }
    }

    #[test]
    fn parses_the_design_example() {
        let acl = Acl::parse(
            "# user or @group   network   max interfaces\nalice              web       4\n@netusers          nethook   2  # comment\n\n",
            Path::new("users.conf"),
        )
        .unwrap();
        assert_eq!(acl.rules.len(), 2);
        assert_eq!(acl.rules[0].who, Who::User("alice".into()));
        assert_eq!(acl.rules[1].who, Who::Group("netusers".into()));
        assert_eq!(acl.rules[1].max, 2);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for bad in [
            "alice web",
            "alice web 3 extra",
            "alice web x",
            "alice web -1",
            "alice web 1001",
            "Alice web 3",
            "@ web 3",
            "alice ../etc 3",
            "al/ice web 3",
        ] {
            let text = format!("# ok\nbob web 1\n{bad}\n");
            let e = Acl::parse(&text, Path::new("/etc/nethook/users.conf"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("/etc/nethook/users.conf line 3: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn allowance_takes_the_largest_matching_rule() {
        let acl = Acl::parse(
            "alice web 1\n@staff web 3\n@other web 9\nbob web 7\nalice db 2\n",
            Path::new("u"),
        )
        .unwrap();
        let groups = |g: &str| match g {
            "staff" => Some(2000),
            "other" => Some(3000),
            _ => None,
        };
        let web = NetworkName::new("web").unwrap();
        let db = NetworkName::new("db").unwrap();
        let none = NetworkName::new("none1").unwrap();
        assert_eq!(acl.allowance(&caller(), &web, groups), Some(3));
        assert_eq!(acl.allowance(&caller(), &db, groups), Some(2));
        assert_eq!(acl.allowance(&caller(), &none, groups), None);
    }

    #[test]
    fn not_setuid_in_unit_tests() {
        // Tests run as root or as a plain user, never through a setuid bit.
        assert!(!setuid_mode());
        assert!(super::caller().is_none());
    }
}
