//! `nethook dns serve`: the daemon. One thread, one tokio current-thread runtime: a UDP and a TCP
//! task per gateway and per in-container listener, a task per forwarded query or TCP connection,
//! and the main loop (signals, a 250 ms tick for reloads, rebinding and the idle exit). The
//! thread leaves its own network namespace only inside [`make_in_container`], for the few
//! syscalls that create an in-container listener's sockets (see the `dns` module doc).
//!
//! Limits keep a flood from growing memory: at most [`MAX_INFLIGHT`] forwarded queries (more are
//! answered SERVFAIL at once), [`MAX_TCP`] TCP connections (more are closed), each idle for at
//! most [`TCP_IDLE`]; UDP buffers are the kernel's.

use super::answer::{self, Outcome, Via, MAX_UDP};
use super::records::{EndpointKey, InContainer, Loader, Records};
use super::upstream::{self, HostResolvers, DNS_PORT};
use super::{Listeners, PidLock, IN_CONTAINER_ADDR, LISTEN_PORT};
use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::state::Dirs;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::AbortHandle;

pub const MAX_INFLIGHT: usize = 512;
pub const MAX_TCP: usize = 128;
pub const TCP_IDLE: Duration = Duration::from_secs(5);
/// With no DNS-enabled endpoint left, the daemon waits this long for a new one, then exits
/// (within the 2 s DESIGN.md promises: grace + one tick).
const IDLE_GRACE: Duration = Duration::from_millis(1000);
const TICK: Duration = Duration::from_millis(250);
/// How long a start waits for a gateway port still held by a daemon that is exiting.
const BIND_RETRY_FOR: Duration = Duration::from_millis(1500);

fn log(msg: impl std::fmt::Display) {
    eprintln!("nethook dns[{}]: {msg}", std::process::id());
}

/// Run the daemon until no endpoint needs it (or SIGTERM). `ready`: written to once listening.
pub fn serve(dirs: &Dirs, ready: Option<OwnedFd>) -> Result<()> {
    // Signals first, before the lock makes our pid visible: a SIGHUP from an attach must never
    // meet the default action (exit).
    let mut mask = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    let sys = |what: &str, e: nix::Error| {
        Error::kernel(what.to_string(), e.desc(), "check the system limits")
    };
    mask.thread_block()
        .map_err(|e| sys("blocking signals", e))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| sys("signalfd", e))?;
    let Some(lock) = PidLock::acquire(dirs)? else {
        log("another daemon holds the lock; exiting");
        return Ok(());
    };
    drop_privileges();
    // Where the thread comes back to after making an in-container listener.
    let home = match Netns::current() {
        Ok(ns) => Some(ns),
        Err(e) => {
            log(format!("no in-container listeners: {e}"));
            None
        }
    };
    log(format!(
        "listening on port {LISTEN_PORT} of each DNS gateway, and on {IN_CONTAINER_ADDR}:{DNS_PORT} in each container of a network that listens there"
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the DNS runtime", e, "check the system limits"))?;
    let local = tokio::task::LocalSet::new();
    let r = local.block_on(&rt, Daemon::new(dirs, lock, home).run(sfd, ready));
    log("exiting");
    r
}

/// The capabilities an in-container listener needs, kept permitted but not effective (see the
/// `dns` module doc): opening /proc/PID/ns/net of a container's process (a ptrace-read check),
/// setns there and back, binding port 53 there. (Without CAP_SYS_PTRACE, opening a runc
/// container's /proc/PID/ns/net fails with EACCES: tried.)
const KEEP: [caps::Capability; 3] = [
    caps::Capability::CAP_SYS_PTRACE,
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_NET_BIND_SERVICE,
];

/// Every other capability goes (bounding set first, which needs CAP_SETPCAP), the effective set
/// is emptied, and no exec can get one back: binding a port above 1024 on an address, reading
/// the run dir and forwarding queries need none.
fn drop_privileges() {
    use caps::CapSet;
    for cap in caps::all() {
        if !KEEP.contains(&cap) {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective] {
        if let Err(e) = caps::clear(None, set) {
            log(format!("dropping capabilities ({set:?}): {e}"));
        }
    }
    let keep: caps::CapsHashSet = KEEP.into_iter().collect();
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let keep = keep.intersection(&permitted).copied().collect();
    if let Err(e) = caps::set(None, CapSet::Permitted, &keep) {
        log(format!("dropping capabilities (Permitted): {e}"));
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
}

/// Run `f` with the kept capabilities effective, then empty the effective set again. (One
/// thread: nothing else runs meanwhile.)
fn with_caps<T>(f: impl FnOnce() -> T) -> T {
    use caps::CapSet;
    for cap in KEEP {
        // One that is not permitted (a daemon started without it): what needs it fails and says.
        let _ = caps::raise(None, CapSet::Effective, cap);
    }
    let out = f();
    if let Err(e) = caps::clear(None, CapSet::Effective) {
        log(format!("dropping capabilities (Effective): {e}"));
    }
    out
}

struct Shared {
    records: RefCell<Rc<Records>>,
    host: RefCell<HostResolvers>,
    inflight: Cell<usize>,
    tcp: Cell<usize>,
}

/// One unit of `Shared::inflight` or `Shared::tcp`, given back on drop (also when the task that
/// holds it is aborted with its listener).
struct Held {
    shared: Rc<Shared>,
    tcp: bool,
}

impl Held {
    fn new(shared: &Rc<Shared>, tcp: bool) -> Held {
        let h = Held {
            shared: shared.clone(),
            tcp,
        };
        h.counter().set(h.counter().get() + 1);
        h
    }

    fn counter(&self) -> &Cell<usize> {
        if self.tcp {
            &self.shared.tcp
        } else {
            &self.shared.inflight
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counter().set(self.counter().get() - 1);
    }
}

impl Shared {
    /// The servers a forward goes to: the network's, else the host's; never one of our own
    /// gateways (that would loop).
    fn servers(&self, net: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
        let list = if net.is_empty() {
            self.host.borrow_mut().servers()
        } else {
            net
        };
        let recs = self.records.borrow();
        list.into_iter()
            .filter(|s| !recs.gateways().contains(s))
            .collect()
    }
}

/// The tasks of one listener: its two loops and every forward and TCP connection they started.
/// All are aborted when the listener is dropped, so its sockets (an accepted connection or a
/// forward's reply path included) close at once.
#[derive(Clone, Default)]
struct Tasks(Rc<RefCell<Vec<AbortHandle>>>);

impl Tasks {
    fn spawn(&self, f: impl std::future::Future<Output = ()> + 'static) {
        let h = tokio::task::spawn_local(f).abort_handle();
        let mut v = self.0.borrow_mut();
        v.retain(|t| !t.is_finished());
        v.push(h);
    }
}

struct Listener {
    tasks: Tasks,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in self.tasks.0.borrow_mut().drain(..) {
            t.abort();
        }
    }
}

/// Where a listener's queries come from, which decides who asks.
#[derive(Clone)]
enum Origin {
    /// A gateway listener: the asker is found by source address.
    Gateway(Ipv4Addr),
    /// The listener inside this endpoint's namespace: the asker is that endpoint.
    Endpoint(Rc<EndpointKey>),
}

impl Origin {
    fn via(&self, src: Ipv4Addr) -> Via<'_> {
        match self {
            Origin::Gateway(gateway) => Via::Gateway {
                gateway: *gateway,
                src,
            },
            Origin::Endpoint(key) => Via::Endpoint(key),
        }
    }
}

struct Daemon {
    lock: PidLock,
    loader: Loader,
    shared: Rc<Shared>,
    listeners: HashMap<Ipv4Addr, Listener>,
    /// Gateways whose bind failed, with the error last logged.
    failed: HashMap<Ipv4Addr, String>,
    /// The daemon's own namespace (None: it could not be opened; no in-container listeners).
    home: Option<Netns>,
    /// In-container listeners, by endpoint.
    inside: HashMap<EndpointKey, Listener>,
    /// Endpoints whose in-container listener could not be made, with the error last logged.
    inside_failed: HashMap<EndpointKey, String>,
    /// The counts last written to the listeners file.
    published: Option<Listeners>,
    listeners_file: PathBuf,
}

impl Daemon {
    fn new(dirs: &Dirs, lock: PidLock, home: Option<Netns>) -> Daemon {
        Daemon {
            lock,
            home,
            inside: HashMap::new(),
            inside_failed: HashMap::new(),
            published: None,
            listeners_file: super::listeners_file(dirs),
            loader: Loader::new(dirs),
            shared: Rc::new(Shared {
                records: RefCell::new(Rc::new(Records::default())),
                host: RefCell::new(HostResolvers::new(
                    PathBuf::from(upstream::HOST_RESOLV_CONF),
                    PathBuf::from(upstream::SYSTEMD_RESOLV_CONF),
                )),
                inflight: Cell::new(0),
                tcp: Cell::new(0),
            }),
            listeners: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    async fn run(mut self, sfd: SignalFd, ready: Option<OwnedFd>) -> Result<()> {
        self.reload();
        // A daemon that is exiting may still hold a port for a moment: retry briefly before
        // telling the spawner we listen.
        let start = Instant::now();
        while !self.failed.is_empty() && start.elapsed() < BIND_RETRY_FOR {
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.bind_all();
        }
        if let Some(fd) = ready {
            // SAFETY: writing one byte to the pipe we were given.
            unsafe { libc::write(fd.as_raw_fd(), b"1".as_ptr().cast(), 1) };
        }
        // SAFETY: the SignalFd owns its fd and stays inside the AsyncFd until both are dropped.
        let sig = unsafe { AsyncFd::register(sfd) }
            .map_err(|e| Error::io("watching signals", e.into(), "check the system limits"))?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle_since: Option<Instant> = None;
        loop {
            tokio::select! {
                g = sig.readable() => {
                    let mut g = g.map_err(|e| Error::io("watching signals", e, "check the system limits"))?;
                    let mut reload = false;
                    while let Ok(Some(info)) = g.get_inner().read_signal() {
                        match Signal::try_from(info.ssi_signo as i32) {
                            Ok(Signal::SIGHUP) => reload = true,
                            Ok(_) => {
                                self.lock.release();
                                return Ok(());
                            }
                            Err(_) => {}
                        }
                    }
                    g.clear_ready();
                    if reload {
                        self.reload();
                    }
                }
                _ = tick.tick() => {
                    if self.loader.changed() {
                        self.reload();
                    } else if !self.failed.is_empty() || !self.inside_failed.is_empty() {
                        self.bind_all();
                    }
                    if let Some(reason) = self.waited_on() {
                        log(format!("{reason}: handing over to the next daemon"));
                        self.lock.release();
                        return Ok(());
                    }
                }
            }
            if self.shared.records.borrow().has_endpoints() {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= IDLE_GRACE && self.may_exit() {
                return Ok(());
            }
        }
    }

    /// A runtime that adopted us and waits for all its descendants before it goes on (`crun
    /// run` in the foreground is a child subreaper and waits until it has no child left, and
    /// its poststop hooks run only after that): when a container of ours has died, stay and
    /// that runtime never returns. So a daemon adopted by a subreaper (parent not init) leaves
    /// once an endpoint's veth is gone; that container's poststop (detach) starts the next
    /// daemon for the others, outside the wait. Queries in between (milliseconds) fail.
    fn waited_on(&self) -> Option<String> {
        let parent = nix::unistd::getppid().as_raw();
        if parent == 1 {
            return None;
        }
        let recs = self.shared.records.borrow();
        let dead = recs.dead_endpoint()?;
        Some(format!(
            "adopted by process {parent} (a child subreaper), and the container of {dead} is gone"
        ))
    }

    /// Let go of the lock, then look once more: an attach that wrote its record before we let
    /// go found us running (and only signalled); one that writes after finds no daemon and
    /// starts one. So a record seen now means we stay (unless that successor took the lock).
    fn may_exit(&mut self) -> bool {
        self.lock.release();
        self.reload();
        if !self.shared.records.borrow().has_endpoints() {
            return true;
        }
        if self.lock.relock() {
            log("a new endpoint came while exiting; staying");
            return false;
        }
        true
    }

    fn reload(&mut self) {
        let recs = Rc::new(self.loader.load());
        *self.shared.records.borrow_mut() = recs;
        self.bind_all();
    }

    /// Listen on every gateway of the records and in every endpoint's namespace that needs it;
    /// stop listening on the others.
    fn bind_all(&mut self) {
        self.bind_gateways();
        self.bind_in_containers();
        let now = Listeners {
            gateways: self.listeners.len(),
            in_container: self.inside.len(),
        };
        if self.published != Some(now) {
            let json = serde_json::to_vec(&now).expect("counts serialise");
            match crate::state::atomic_write(&self.listeners_file, &json, false) {
                Ok(()) => self.published = Some(now),
                Err(e) => log(format!("writing the listener counts: {e}")),
            }
        }
    }

    /// In-container listeners: the gone endpoints' closed first (their namespace must not stay
    /// pinned), then one made for each endpoint that has none. Kept ones are never touched.
    fn bind_in_containers(&mut self) {
        let want = self.shared.records.borrow().in_container();
        self.inside.retain(|k, _| want.iter().any(|w| w.key == *k));
        self.inside_failed
            .retain(|k, _| want.iter().any(|w| w.key == *k));
        let Some(home) = &self.home else {
            return;
        };
        for w in want {
            if self.inside.contains_key(&w.key) {
                continue;
            }
            let made = make_in_container(&w, home).and_then(|(udp, tcp)| {
                serve_sockets(
                    udp,
                    tcp,
                    Origin::Endpoint(Rc::new(w.key.clone())),
                    &self.shared,
                )
                .map_err(|e| e.to_string())
            });
            match made {
                Ok(l) => {
                    if self.inside_failed.remove(&w.key).is_some() {
                        log(format!(
                            "container {}: listening on {IN_CONTAINER_ADDR}:{DNS_PORT} in its namespace now",
                            w.key.id
                        ));
                    }
                    self.inside.insert(w.key, l);
                }
                Err(e) => {
                    if self.inside_failed.get(&w.key) != Some(&e) {
                        log(format!(
                            "container {}: no DNS listener in its namespace {}: {e}; trying again on each reload",
                            w.key.id,
                            w.netns.display()
                        ));
                    }
                    self.inside_failed.insert(w.key, e);
                }
            }
        }
    }

    /// Listen on every gateway of the records, stop listening on the others.
    fn bind_gateways(&mut self) {
        let gws = self.shared.records.borrow().gateways();
        self.listeners.retain(|gw, _| gws.contains(gw));
        self.failed.retain(|gw, _| gws.contains(gw));
        for gw in gws {
            if self.listeners.contains_key(&gw) {
                continue;
            }
            match listen(gw, &self.shared) {
                Ok(l) => {
                    if self.failed.remove(&gw).is_some() {
                        log(format!("listening on {gw}:{LISTEN_PORT} now"));
                    }
                    self.listeners.insert(gw, l);
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.failed.get(&gw) != Some(&e) {
                        log(format!(
                            "cannot listen on {gw}:{LISTEN_PORT}: {e}; retrying"
                        ));
                    }
                    self.failed.insert(gw, e);
                }
            }
        }
    }
}

/// A socket bound to addr:port, in the thread's namespace. IP_FREEBIND: the bridge address may
/// not be up yet (a network being re-created), nor a container's lo; SO_REUSEADDR for TCP only
/// (a restart must not wait for TIME_WAIT; for UDP it would let two sockets share the port).
fn bound_socket(addr: Ipv4Addr, port: u16, kind: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let set = |level, opt| {
        // SAFETY: an int option on our socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::IPPROTO_IP, libc::IP_FREEBIND);
    if kind == libc::SOCK_STREAM {
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR);
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in and its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if kind == libc::SOCK_STREAM {
        // SAFETY: listen(2) on our socket.
        if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(fd)
}

fn listen(gw: Ipv4Addr, shared: &Rc<Shared>) -> std::io::Result<Listener> {
    let udp = bound_socket(gw, LISTEN_PORT, libc::SOCK_DGRAM)?;
    let tcp = bound_socket(gw, LISTEN_PORT, libc::SOCK_STREAM)?;
    serve_sockets(udp, tcp, Origin::Gateway(gw), shared)
}

/// The UDP and TCP sockets of an in-container listener for endpoint `w`, bound to
/// IN_CONTAINER_ADDR:53 inside its namespace: opened by the recorded path and checked against the
/// recorded identity before anything is done there. The error says why not, in a few words.
fn make_in_container(
    w: &InContainer,
    home: &Netns,
) -> std::result::Result<(OwnedFd, OwnedFd), String> {
    let Some(want) = w.key.netns_id else {
        return Err("its record has no namespace identity to check".into());
    };
    with_caps(|| {
        let ns = Netns::open(&w.netns).map_err(|e| e.to_string())?;
        let id = ns.id().map_err(|e| e.to_string())?;
        if id != want {
            return Err(format!(
                "that path is another namespace now (inode {}:{}, recorded {}:{})",
                id.dev, id.ino, want.dev, want.ino
            ));
        }
        let socks = ns
            .run_in(home, || {
                Ok(
                    bound_socket(IN_CONTAINER_ADDR, DNS_PORT, libc::SOCK_DGRAM).and_then(|udp| {
                        bound_socket(IN_CONTAINER_ADDR, DNS_PORT, libc::SOCK_STREAM)
                            .map(|tcp| (udp, tcp))
                    }),
                )
            })
            .map_err(|e| e.to_string())?;
        socks.map_err(|e| match e.raw_os_error() {
            Some(libc::EADDRINUSE) => format!(
                "{IN_CONTAINER_ADDR}:{DNS_PORT} is taken by a program in that namespace; skipped"
            ),
            _ => format!("binding {IN_CONTAINER_ADDR}:{DNS_PORT}: {e}"),
        })
    })
}

/// Serve two bound sockets (nonblocking; the TCP one listening).
fn serve_sockets(
    udp: OwnedFd,
    tcp: OwnedFd,
    origin: Origin,
    shared: &Rc<Shared>,
) -> std::io::Result<Listener> {
    let udp = UdpSocket::from_std(std::net::UdpSocket::from(udp))?;
    let tcp = TcpListener::from_std(std::net::TcpListener::from(tcp))?;
    let tasks = Tasks::default();
    tasks.spawn(udp_loop(
        Rc::new(udp),
        origin.clone(),
        shared.clone(),
        tasks.clone(),
    ));
    tasks.spawn(tcp_loop(tcp, origin, shared.clone(), tasks.clone()));
    Ok(Listener { tasks })
}

async fn udp_loop(sock: Rc<UdpSocket>, origin: Origin, shared: Rc<Shared>, tasks: Tasks) {
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok((n, SocketAddr::V4(a))) => (n, a),
            Ok(_) => continue,
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let records = shared.records.borrow().clone();
        let packet = &buf[..n];
        match answer::handle_via(&records, origin.via(*src.ip()), packet, true) {
            // try_send: the loop never waits on a full socket buffer (the reply is lost, as the
            // network may lose it; the client asks again).
            Outcome::Reply(b) => {
                let _ = sock.try_send_to(&b, src.into());
            }
            Outcome::Drop => {}
            Outcome::Forward { servers, udp_limit } => {
                let servers = shared.servers(servers);
                if servers.is_empty() || shared.inflight.get() >= MAX_INFLIGHT {
                    let _ = sock.try_send_to(&answer::servfail(packet), src.into());
                    continue;
                }
                let held = Held::new(&shared, false);
                let (sock, packet) = (sock.clone(), packet.to_vec());
                tasks.spawn(async move {
                    let reply = upstream::forward(&packet, &servers, false, udp_limit)
                        .await
                        .unwrap_or_else(|| answer::servfail(&packet));
                    let _ = sock.send_to(&reply, SocketAddr::V4(src)).await;
                    drop(held);
                });
            }
        }
    }
}

async fn tcp_loop(listener: TcpListener, origin: Origin, shared: Rc<Shared>, tasks: Tasks) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let SocketAddr::V4(peer) = peer else {
            continue;
        };
        if shared.tcp.get() >= MAX_TCP {
            continue;
        }
        let held = Held::new(&shared, true);
        let (shared, origin) = (shared.clone(), origin.clone());
        tasks.spawn(async move {
            let _ = tcp_conn(stream, *peer.ip(), &origin, &shared).await;
            drop(held);
        });
    }
}

/// Queries of one TCP connection, answered in order.
async fn tcp_conn(
    mut s: TcpStream,
    src: Ipv4Addr,
    origin: &Origin,
    shared: &Rc<Shared>,
) -> Option<()> {
    loop {
        let mut len = [0u8; 2];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len))
            .await
            .ok()?
            .ok()?;
        let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut packet))
            .await
            .ok()?
            .ok()?;
        let records = shared.records.borrow().clone();
        let reply = match answer::handle_via(&records, origin.via(src), &packet, false) {
            Outcome::Reply(b) => b,
            Outcome::Drop => return None,
            Outcome::Forward { servers, .. } => {
                let servers = shared.servers(servers);
                if servers.is_empty() || shared.inflight.get() >= MAX_INFLIGHT {
                    answer::servfail(&packet)
                } else {
                    let held = Held::new(shared, false);
                    let r = upstream::forward(&packet, &servers, true, usize::MAX).await;
                    drop(held);
                    r.unwrap_or_else(|| answer::servfail(&packet))
                }
            }
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        tokio::time::timeout(TCP_IDLE, s.write_all(&out))
            .await
            .ok()?
            .ok()?;
    }
}
