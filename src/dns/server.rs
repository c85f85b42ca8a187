//! `nethook dns serve`: the daemon. One thread, one tokio current-thread runtime: a UDP and a TCP
//! task per gateway, a task per forwarded query or TCP connection, and the main loop (signals,
//! a 250 ms tick for reloads, rebinding and the idle exit).
//!
//! Limits keep a flood from growing memory: at most [`MAX_INFLIGHT`] forwarded queries (more are
//! answered SERVFAIL at once), [`MAX_TCP`] TCP connections (more are closed), each idle for at
//! most [`TCP_IDLE`]; UDP buffers are the kernel's.

use super::answer::{self, Outcome, MAX_UDP};
use super::records::{Loader, Records};
use super::upstream::{self, HostResolvers};
use super::{PidLock, LISTEN_PORT};
use crate::error::{Error, Result};
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
use tokio::task::JoinHandle;

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
    log(format!(
        "listening on port {LISTEN_PORT} of each DNS gateway"
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the DNS runtime", e, "check the system limits"))?;
    let local = tokio::task::LocalSet::new();
    let r = local.block_on(&rt, Daemon::new(dirs, lock).run(sfd, ready));
    log("exiting");
    r
}

/// Every capability goes (bounding set first, which needs CAP_SETPCAP), and no exec can get
/// one back: binding a port above 1024 on an address, reading the run dir and forwarding
/// queries need none.
fn drop_privileges() {
    use caps::CapSet;
    for cap in caps::all() {
        let _ = caps::drop(None, CapSet::Bounding, cap);
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        if let Err(e) = caps::clear(None, set) {
            log(format!("dropping capabilities ({set:?}): {e}"));
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
}

struct Shared {
    records: RefCell<Rc<Records>>,
    host: RefCell<HostResolvers>,
    inflight: Cell<usize>,
    tcp: Cell<usize>,
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

struct Listener {
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.udp.abort();
        self.tcp.abort();
    }
}

struct Daemon {
    lock: PidLock,
    loader: Loader,
    shared: Rc<Shared>,
    listeners: HashMap<Ipv4Addr, Listener>,
    /// Gateways whose bind failed, with the error last logged.
    failed: HashMap<Ipv4Addr, String>,
}

impl Daemon {
    fn new(dirs: &Dirs, lock: PidLock) -> Daemon {
        Daemon {
            lock,
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
                    } else if !self.failed.is_empty() {
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

    /// Listen on every gateway of the records, stop listening on the others.
    fn bind_all(&mut self) {
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

/// A socket bound to gw:LISTEN_PORT. IP_FREEBIND: the bridge address may not be up yet (a
/// network being re-created); SO_REUSEADDR for TCP only (a restart must not wait for
/// TIME_WAIT; for UDP it would let two sockets share the port).
fn bound_socket(gw: Ipv4Addr, kind: libc::c_int) -> std::io::Result<OwnedFd> {
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
        sin_port: LISTEN_PORT.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(gw).to_be(),
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
    let udp = UdpSocket::from_std(std::net::UdpSocket::from(bound_socket(
        gw,
        libc::SOCK_DGRAM,
    )?))?;
    let tcp = TcpListener::from_std(std::net::TcpListener::from(bound_socket(
        gw,
        libc::SOCK_STREAM,
    )?))?;
    Ok(Listener {
        udp: tokio::task::spawn_local(udp_loop(Rc::new(udp), gw, shared.clone())),
        tcp: tokio::task::spawn_local(tcp_loop(tcp, gw, shared.clone())),
    })
}

async fn udp_loop(sock: Rc<UdpSocket>, gw: Ipv4Addr, shared: Rc<Shared>) {
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
        match answer::handle(&records, gw, *src.ip(), packet, true) {
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
                shared.inflight.set(shared.inflight.get() + 1);
                let (sock, shared, packet) = (sock.clone(), shared.clone(), packet.to_vec());
                tokio::task::spawn_local(async move {
                    let reply = upstream::forward(&packet, &servers, false, udp_limit)
                        .await
                        .unwrap_or_else(|| answer::servfail(&packet));
                    let _ = sock.send_to(&reply, SocketAddr::V4(src)).await;
                    shared.inflight.set(shared.inflight.get() - 1);
                });
            }
        }
    }
}

async fn tcp_loop(listener: TcpListener, gw: Ipv4Addr, shared: Rc<Shared>) {
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
        shared.tcp.set(shared.tcp.get() + 1);
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let _ = tcp_conn(stream, *peer.ip(), gw, &shared).await;
            shared.tcp.set(shared.tcp.get() - 1);
        });
    }
}

/// Queries of one TCP connection, answered in order.
async fn tcp_conn(
    mut s: TcpStream,
    src: Ipv4Addr,
    gw: Ipv4Addr,
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
        let reply = match answer::handle(&records, gw, src, &packet, false) {
            Outcome::Reply(b) => b,
            Outcome::Drop => return None,
            Outcome::Forward { servers, .. } => {
                let servers = shared.servers(servers);
                if servers.is_empty() || shared.inflight.get() >= MAX_INFLIGHT {
                    answer::servfail(&packet)
                } else {
                    shared.inflight.set(shared.inflight.get() + 1);
                    let r = upstream::forward(&packet, &servers, true, usize::MAX).await;
                    shared.inflight.set(shared.inflight.get() - 1);
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
