//! Container DNS: one daemon per host network namespace (`nethook dns serve`), started by the
//! first attach that puts a container on a network with DNS on, gone within 2 s after the last
//! such container.
//!
//! - Where it listens, on UDP and TCP, one of two ways per network ([`listens_in_container`]):
//!   - On the gateway (bridge networks, the default): every gateway address of a DNS-enabled
//!     network in use, port [`LISTEN_PORT`] (not 53). A static nftables rule (firewall module,
//!     prerouting) redirects what containers send to their gateway's port 53 there, so a host
//!     resolver already bound to 0.0.0.0:53 (dnsmasq, systemd-resolved, bind) never collides
//!     with it.
//!   - In the container (macvlan networks, and any network with `-o dns_listen=container`):
//!     [`IN_CONTAINER_ADDR`]:53 inside each such endpoint's own network namespace, what the
//!     container's resolv.conf names (Docker's embedded DNS address). Why: a macvlan container
//!     cannot reach its host through the parent interface (the kernel never passes traffic
//!     between a macvlan port and its parent), so no host address is there to ask; its own
//!     loopback always is (attach sets lo up, and 127.0.0.0/8 is local on lo). How: the daemon
//!     makes these sockets itself. On each reload, for every ready endpoint on such a network,
//!     it opens the namespace by the recorded path, checks that its nsfs identity (dev, ino) is
//!     the record's `netns_id` (a reused pid never hands it someone else's namespace), enters
//!     it on its own thread (setns), creates and binds the sockets, and comes back: a socket
//!     keeps the namespace it was created in, and is served by the same loop and answer path as
//!     the others. Who asks is the endpoint the socket belongs to (no address look-up); it sees
//!     the names of every network it is on, as on a gateway. Forwards go out from the daemon's
//!     own namespace. Sockets of an endpoint that is gone are closed on that reload, with every
//!     query and connection they had (an open socket pins the dead namespace and with it the
//!     container's interfaces); the others are kept across reloads, never dropped and made
//!     anew (no lost queries). A namespace that cannot be opened or entered (the container is
//!     already gone), has another identity, or whose 127.0.0.11:53 is taken by a process of
//!     its own, is logged once and tried again on each tick; the daemon goes on serving the
//!     rest. Another netns, so a host resolver on port 53 never collides with these either.
//!   - Privileges: right after taking its lock the daemon keeps only what the second way needs,
//!     in its permitted set, with an empty effective set: it raises them for the few syscalls
//!     that make an in-container listener, and drops them again at once. CAP_SYS_PTRACE to open
//!     `/proc/PID/ns/net` (a ptrace-read check: the container's init is not dumpable during
//!     createRuntime and may hold capabilities the daemon has not, or another uid),
//!     CAP_SYS_ADMIN for setns into the namespace and back, CAP_NET_BIND_SERVICE to bind port
//!     53 there. Everything else goes, the bounding set included, with no_new_privs; a gateway
//!     listener, reading the run dir and forwarding need none.
//! - What it answers: see `records` (names, aliases, NAME.NETWORK: A, AAAA on dual-stack
//!   networks, NODATA for AAAA of a name without IPv6; PTR in `in-addr.arpa` and `ip6.arpa`;
//!   only across shared networks) and `answer`; everything else is forwarded (`upstream`), except from `--internal`
//!   networks.
//! - Where names come from: the run dir's endpoint records (`run/endpoints/*.json`), re-read on
//!   SIGHUP (sent by attach and detach once their record is written or removed), and on any
//!   change of the endpoints or networks directory seen by a 250 ms poll of their mtimes (gc,
//!   hand edits). The sockets stay open across reloads.
//! - Which daemon: `run/dns/pid` holds a POSIX write lock for the daemon's life and its pid; a
//!   lock test (F_GETLK) tells attach whether one runs and which pid to signal, with no stale
//!   pid file to trust. Its log is `run/dns/log`; `run/dns/listeners.json` counts its listeners
//!   (`dns status`, `ps`).
//! - Which parent: fully detached (double fork, setsid, stdio closed), so it outlives the hook.
//!   Under a runtime that is a child subreaper and waits for every descendant (`crun run` in
//!   the foreground) it hands over once one of its containers is gone, and that container's
//!   poststop starts the next daemon (see `server`).

pub mod answer;
pub mod records;
pub mod server;
pub mod upstream;

use crate::config::{DriverKind, Network};
use crate::error::{Error, Result};
use crate::names::ContainerId;
use crate::state::{ensure_dir, Dirs};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// The port the daemon listens on at each gateway; containers' port 53 is redirected to it.
/// Above 1024 (no capability needed to bind), below the ephemeral range (32768-60999: an
/// outgoing socket never holds it), and used by nothing common (mDNS is 5353, LLMNR 5355).
pub const LISTEN_PORT: u16 = 15353;

/// Where an in-container listener is (port 53), and what such a container's resolv.conf names:
/// Docker's embedded DNS address, a loopback address no program binds by habit.
pub const IN_CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// The network option that chooses where DNS listens: `gateway` (the default for bridge) or
/// `container`. Macvlan networks always listen in the container.
pub const OPT_DNS_LISTEN: &str = "dns_listen";

/// How long a freshly started daemon may take to bind and load before attach goes on without
/// waiting (it still comes up; the container just may not resolve names at once).
const READY_WAIT: Duration = Duration::from_secs(2);

/// Log files above this are started afresh when a daemon starts.
const LOG_MAX: u64 = 1 << 20;

pub fn dns_dir(dirs: &Dirs) -> PathBuf {
    dirs.run.join("dns")
}

pub fn pid_file(dirs: &Dirs) -> PathBuf {
    dns_dir(dirs).join("pid")
}

pub fn log_file(dirs: &Dirs) -> PathBuf {
    dns_dir(dirs).join("log")
}

/// What the running daemon listens on (written by it after each change; read by `status`).
pub fn listeners_file(dirs: &Dirs) -> PathBuf {
    dns_dir(dirs).join("listeners.json")
}

/// Whether the daemon serves containers of `net` inside their own namespaces (at
/// [`IN_CONTAINER_ADDR`]:53) rather than on the gateway: macvlan networks (their containers
/// cannot reach the host), and networks created with `-o dns_listen=container`. Never for a
/// network without DNS.
pub fn listens_in_container(net: &Network) -> bool {
    net.dns
        && (net.driver == DriverKind::Macvlan
            || net.options.get(OPT_DNS_LISTEN).map(String::as_str) == Some("container"))
}

/// The name server a container's resolv.conf names: for its first network with DNS on, the
/// in-container address when that network listens in the container, else its gateway (the
/// daemon answers for all of the container's networks either way); None when none has DNS on.
pub fn nameserver(nets: &[Network]) -> Option<Ipv4Addr> {
    nets.iter().find(|n| n.dns).map(|n| {
        if listens_in_container(n) {
            IN_CONTAINER_ADDR
        } else {
            n.subnet4().gateway
        }
    })
}

/// How many sockets pairs (UDP and TCP) the daemon has open, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listeners {
    /// On gateways (one per DNS network in use that listens there).
    pub gateways: usize,
    /// Inside endpoints' namespaces (one per endpoint on a network that listens there).
    pub in_container: usize,
}

/// Whether the daemon runs, as `dns status` and `doctor` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub running: bool,
    pub pid: Option<u32>,
    pub port: u16,
    /// What it listens on (zero when not running).
    pub listeners: Listeners,
}

pub fn status(dirs: &Dirs) -> Status {
    let pid = lock_holder(dirs);
    let listeners = pid
        .and_then(|_| std::fs::read(listeners_file(dirs)).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    Status {
        running: pid.is_some(),
        pid,
        port: LISTEN_PORT,
        listeners,
    }
}

/// A whole-file `struct flock`.
fn flock(kind: libc::c_int) -> libc::flock {
    // SAFETY: plain old data, all zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// The pid of the process holding the daemon lock, if any (a lock test: takes nothing). The
/// test is an open-file-description one (F_OFD_GETLK): it sees the daemon's process lock from
/// any process, the daemon's own included, and the kernel reports the holder's pid.
pub fn lock_holder(dirs: &Dirs) -> Option<u32> {
    let f = File::open(pid_file(dirs)).ok()?;
    let mut fl = flock(libc::F_WRLCK);
    // SAFETY: valid fd and flock struct (l_pid 0, as F_OFD_GETLK requires).
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
        return None;
    }
    (fl.l_type != libc::F_UNLCK as libc::c_short && fl.l_pid > 0).then_some(fl.l_pid as u32)
}

/// What happened to an endpoint, for `endpoint_changed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Attached,
    Detached,
}

/// Attach and detach call this once their record is written or removed, with `dns` true when
/// the endpoint is on a network with DNS on. A running daemon reloads. Without one: an attach
/// of a DNS endpoint starts it; a detach of one starts it only if DNS endpoints remain (a
/// daemon that handed over, see `server`, is replaced here). An endpoint without DNS never
/// costs more than the daemon look-up: no scan of the records, so attach and detach stay flat
/// however many endpoints exist. Never fails the caller: a DNS problem is one warning line on
/// stderr, and the container gets its network all the same.
pub fn endpoint_changed(dirs: &Dirs, id: &ContainerId, dns: bool, event: Event) {
    if let Err(e) = notify(dirs, dns, event) {
        eprintln!("nethook: container {id}: dns: {e}");
    }
}

/// `restore`: start the daemon if DNS-enabled endpoints exist and none runs (after a reboot
/// the run dir is gone too, so this matters after a kill or a crash).
pub fn ensure_running(dirs: &Dirs) -> Result<()> {
    notify(dirs, true, Event::Detached)
}

fn notify(dirs: &Dirs, dns: bool, event: Event) -> Result<()> {
    if let Some(pid) = lock_holder(dirs) {
        // ESRCH: it just exited; its successor (if any) loads the records itself.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        );
        return Ok(());
    }
    if !dns {
        return Ok(());
    }
    // Without a daemon (the rare case after a detach): a look at every record.
    if event == Event::Attached || records::Loader::new(dirs).load().has_endpoints() {
        if crate::privilege::setuid_mode() {
            // Setuid mode keeps too few capabilities for the daemon (`privilege` module doc).
            return Err(Error::invalid(
                "the DNS daemon",
                "is not running, and a setuid nethook does not start it",
                "ask the admin to run 'nethook restore' (as root) to start it",
            ));
        }
        spawn(dirs)?;
    }
    Ok(())
}

fn cstring(s: impl Into<Vec<u8>>) -> Result<CString> {
    CString::new(s).map_err(|_| {
        Error::invalid(
            "a state directory path",
            "contains a NUL byte",
            "use a plain path",
        )
    })
}

fn open_log(dirs: &Dirs) -> Result<File> {
    let path = log_file(dirs);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_MAX) {
        let _ = std::fs::remove_file(&path);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(&path)
        .map_err(|e| {
            Error::io(
                format!("opening {}", path.display()),
                e,
                "check the run dir",
            )
        })
}

/// Start the daemon fully detached (the runtime waits for the hook's stdout and stderr to
/// close): fork, setsid, fork again, stdin and stdout to /dev/null, stderr to the log, every
/// other fd closed (the hook's locks among them) but the readiness pipe, then exec ourselves as
/// `nethook dns serve`. Waits until the daemon says it listens (at most [`READY_WAIT`]), so a
/// name is resolvable when attach returns.
fn spawn(dirs: &Dirs) -> Result<()> {
    ensure_dir(&dns_dir(dirs))?;
    let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    let args = [
        "nethook".to_string(),
        "--config-dir".into(),
        abs(&dirs.config).display().to_string(),
        "--run-dir".into(),
        abs(&dirs.run).display().to_string(),
        "dns".into(),
        "serve".into(),
        "--ready-fd".into(),
        "3".into(),
    ];
    let argv: Vec<CString> = args
        .iter()
        .map(|a| cstring(a.as_str()))
        .collect::<Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let exe = c"/proc/self/exe";
    let log = open_log(dirs)?;
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| Error::io("opening /dev/null", e, "check /dev"))?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::kernel("a pipe for the DNS daemon", e.desc(), "check the fd limits"))?;
    let fork_err = |e: nix::Error| {
        Error::kernel(
            "starting the DNS daemon",
            e.desc(),
            "check the process limits",
        )
    };
    // SAFETY: nethook is single-threaded here (current-thread runtime, no spawned threads), so
    // the child may run anything; it only does fd syscalls and exec anyway.
    match unsafe { nix::unistd::fork() }.map_err(fork_err)? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let _ = nix::sys::wait::waitpid(child, None);
            wait_ready(&r);
            if lock_holder(dirs).is_none() {
                return Err(Error::invalid(
                    "the DNS daemon",
                    "did not start",
                    format!("see {}", log_file(dirs).display()),
                ));
            }
            Ok(())
        }
        nix::unistd::ForkResult::Child => {
            // SAFETY: async-signal-safe syscalls only, then exec or _exit.
            unsafe {
                libc::setsid();
                if libc::fork() == 0 {
                    // Out of the way of 0-3 first: any of them may be closed in the hook.
                    let hi = |fd: i32| libc::fcntl(fd, libc::F_DUPFD, 10);
                    let (n, l, p) = (hi(null.as_raw_fd()), hi(log.as_raw_fd()), hi(w.as_raw_fd()));
                    libc::dup2(n, 0);
                    libc::dup2(n, 1);
                    libc::dup2(l, 2);
                    libc::dup2(p, 3);
                    libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
                    let mut empty: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut empty);
                    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                    libc::chdir(c"/".as_ptr());
                    libc::execv(exe.as_ptr(), argv_ptrs.as_ptr());
                    libc::_exit(127);
                }
                libc::_exit(0);
            }
        }
    }
}

/// Wait for the daemon's one byte (or EOF: it failed, or found another daemon).
fn wait_ready(r: &OwnedFd) {
    let mut pfd = libc::pollfd {
        fd: r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, READY_WAIT.as_millis() as i32) } == 1 {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a one-byte buffer.
        unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
    }
}

/// The daemon's side of the lock.
pub(crate) struct PidLock {
    file: File,
}

impl PidLock {
    /// Take the lock, or None when another daemon holds it.
    pub(crate) fn acquire(dirs: &Dirs) -> Result<Option<PidLock>> {
        ensure_dir(&dns_dir(dirs))?;
        let path = pid_file(dirs);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|e| {
                Error::io(
                    format!("opening {}", path.display()),
                    e,
                    "check the run dir",
                )
            })?;
        let l = PidLock { file };
        Ok(l.relock().then_some(l))
    }

    /// F_SETLK; true when we hold it now (and the pid is written).
    pub(crate) fn relock(&self) -> bool {
        let fl = flock(libc::F_WRLCK);
        // SAFETY: valid fd and flock struct.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLK, &fl) } != 0 {
            return false;
        }
        use std::os::unix::fs::FileExt;
        let pid = format!("{}\n", std::process::id());
        let _ = self.file.set_len(0);
        let _ = self.file.write_at(pid.as_bytes(), 0);
        true
    }

    /// Empty the file, then let go: the file itself stays (unlinking it could orphan the lock
    /// of a successor that opened it meanwhile).
    pub(crate) fn release(&self) {
        let _ = self.file.set_len(0);
        let fl = flock(libc::F_UNLCK);
        // SAFETY: valid fd and flock struct.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLK, &fl) };
    }
}

/// An fd number given on the command line (`--ready-fd`), taken over.
pub fn take_fd(fd: i32) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only tells whether the fd is open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the spawner made this fd for us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_is_the_first_dns_gateway() {
        use records::tests::net;
        let off = net("off", "10.4.0.0/24", false, false);
        let on = net("on", "10.5.0.0/24", true, true);
        assert_eq!(nameserver(std::slice::from_ref(&off)), None);
        assert_eq!(
            nameserver(&[off.clone(), on.clone()]),
            Some("10.5.0.1".parse().unwrap())
        );
        // The first DNS network decides: in the container, or its gateway.
        let mut inside = net("in", "10.6.0.0/24", false, true);
        inside
            .options
            .insert(OPT_DNS_LISTEN.into(), "container".into());
        assert_eq!(
            nameserver(&[off.clone(), inside.clone(), on.clone()]),
            Some(IN_CONTAINER_ADDR)
        );
        assert_eq!(nameserver(&[on, inside]), Some("10.5.0.1".parse().unwrap()));
    }

    #[test]
    fn which_networks_listen_in_the_container() {
        use records::tests::net;
        let mut n = net("n", "10.7.0.0/24", false, true);
        assert!(!listens_in_container(&n), "bridge: the gateway by default");
        n.options.insert(OPT_DNS_LISTEN.into(), "gateway".into());
        assert!(!listens_in_container(&n));
        n.options.insert(OPT_DNS_LISTEN.into(), "container".into());
        assert!(listens_in_container(&n));
        n.dns = false;
        assert!(!listens_in_container(&n), "no DNS, no listener");
        let mut m = net("m", "10.8.0.0/24", false, true);
        m.driver = DriverKind::Macvlan;
        assert!(listens_in_container(&m));
        m.options.insert(OPT_DNS_LISTEN.into(), "gateway".into());
        assert!(
            listens_in_container(&m),
            "a macvlan container cannot reach its host"
        );
    }

    #[test]
    fn lock_and_status() {
        let tmp = std::env::temp_dir().join(format!("nethook-dns-lock-{}", std::process::id()));
        let dirs = Dirs::new(tmp.join("c"), tmp.join("r"));
        assert_eq!(status(&dirs).pid, None);
        let l = PidLock::acquire(&dirs).unwrap().unwrap();
        // (Once: the test's close of its fd drops our own POSIX lock, as any close of the file
        // in the holding process does; the daemon never opens the file twice.)
        assert_eq!(status(&dirs).pid, Some(std::process::id()));
        assert_eq!(
            std::fs::read_to_string(pid_file(&dirs)).unwrap().trim(),
            std::process::id().to_string()
        );
        l.release();
        assert_eq!(std::fs::read_to_string(pid_file(&dirs)).unwrap(), "");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
