//! Container DNS inside the container's own namespace (issue 5, item 5): networks that listen in
//! the container (macvlan, and any network with `-o dns_listen=container`, which these tests use:
//! the same path minus the driver) get 127.0.0.11:53 inside each endpoint's namespace, made by
//! the daemon. Real clients: busybox `nslookup` in runc containers, `dig` and in-process queries
//! from the namespaces; a host resolver on port 53 and a program holding 127.0.0.11:53 inside a
//! namespace; the 100 ms appearance and disappearance; no socket left in a gone namespace.

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const INSIDE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const WAIT: Duration = Duration::from_millis(200);

fn s(ip: Ipv4Addr) -> String {
    ip.to_string()
}

/// A network that listens in the container.
fn in_container_net(sb: &Sandbox, name: &str, subnet: &str, extra: &[&str]) {
    let mut args = vec![
        "network",
        "create",
        name,
        "--subnet",
        subnet,
        "--opt",
        "dns_listen=container",
    ];
    args.extend_from_slice(extra);
    sb.nethook(&args).ok();
}

/// The daemon's status as JSON.
fn dns_status(sb: &Sandbox) -> Value {
    serde_json::from_str(
        &sb.nethook(&["--format", "json", "dns", "status"])
            .ok()
            .stdout,
    )
    .unwrap()
}

/// How many in-container listeners the daemon has open (0 when it does not run).
fn inside_count(sb: &Sandbox) -> u64 {
    dns_status(sb)["listeners"]["in_container"]
        .as_u64()
        .unwrap_or(0)
}

/// Socket fds the process holds.
fn sockets_of(pid: u32) -> usize {
    list_dir(std::path::Path::new(&format!("/proc/{pid}/fd")))
        .into_iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
        .filter(|p| p.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Poll `f` as fast as it answers until it returns true; the time it took.
fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// One UDP query to 127.0.0.11:53 from inside `netns`.
fn ask(netns: &str, name: &str) -> Option<(ResponseCode, Vec<Ipv4Addr>)> {
    query_in(netns, SocketAddrV4::new(INSIDE, 53), name, WAIT)
}

fn resolves(netns: &str, name: &str, ip: Ipv4Addr) -> bool {
    ask(netns, name) == Some((ResponseCode::NoError, vec![ip]))
}

#[test]
fn in_container_listener_serves_runc_containers_and_goes_with_them() {
    if !can_run(
        "in_container_listener_serves_runc_containers_and_goes_with_them",
        &["runc", "busybox", "socat", "nft", "ss", "dig"],
    ) {
        return;
    }
    let sb = Sandbox::new("dnsns");
    let peer = sb.add_peer();
    let up = FakeUpstream::start(&peer.path(), &[("outside.example", OUTSIDE)]);
    let upstream = s(peer.ip);
    in_container_net(&sb, "m", "10.92.1.0/24", &["--dns-upstream", &upstream]);
    in_container_net(&sb, "n", "10.92.2.0/24", &["--dns-upstream", &upstream]);
    // A gateway network's endpoint keeps the daemon running throughout.
    sb.nethook(&[
        "network",
        "create",
        "g",
        "--subnet",
        "10.92.3.0/24",
        "--dns-upstream",
        &upstream,
    ])
    .ok();
    let g = sb.add_netns("g");
    sb.nethook(&[
        "attach",
        &format!("/run/netns/{g}"),
        "--id",
        "g",
        "--network",
        "g",
    ])
    .ok();
    let daemon = sb.dns_pid().expect("daemon");
    let base_sockets = sockets_of(daemon);
    assert_eq!(inside_count(&sb), 0);

    // c1: its own name at 127.0.0.11 in its namespace, measured from `runc create` returning
    // (its createRuntime hook returned before that).
    let mut b1 = sb.bundle("c1", "sleep 60");
    b1.annotate("nethook.network", "m")
        .annotate("nethook.aliases", "db");
    let c1 = sb.runc_create(&b1);
    let ip1 = sb.ip_of(&c1.id);
    let name1 = format!("{}.", c1.id);
    let appear_hook = time_until(Duration::from_secs(1), || {
        resolves(&c1.netns(), &name1, ip1)
    });
    sb.runc(&["start", &c1.id]).status().unwrap();
    let mut b2 = sb.bundle("c2", "sleep 60");
    b2.annotate("nethook.network", "m");
    let c2 = sb.runc_start(&b2);
    let mut b3 = sb.bundle("c3", "sleep 60");
    b3.annotate("nethook.network", "n");
    let c3 = sb.runc_start(&b3);
    assert_eq!(inside_count(&sb), 3, "{}", sb.dns_log());

    // resolv.conf names 127.0.0.11 alone.
    let resolv = sb.runc_exec(&c2, "cat /etc/resolv.conf").ok();
    let ns: Vec<&str> = resolv
        .stdout
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(ns, vec!["nameserver 127.0.0.11"], "{}", resolv.stdout);
    // busybox nslookup, at 127.0.0.11 and through resolv.conf: names, alias, NAME.NETWORK, PTR.
    for cmd in [
        format!("nslookup {} 127.0.0.11", c1.id),
        "nslookup db 127.0.0.11".to_string(),
        format!("nslookup {}.m", c1.id),
        "nslookup db".to_string(),
    ] {
        let r = sb.runc_exec(&c2, &cmd);
        assert!(
            r.code == 0 && r.stdout.contains(&s(ip1)),
            "{cmd} in c2: {r:?}\n{}",
            sb.dns_log()
        );
    }
    let r = sb
        .runc_exec(&c2, &format!("nslookup {ip1} 127.0.0.11"))
        .ok();
    assert!(r.stdout.contains(&c1.id), "{r:?}");
    // Other names go upstream, from the daemon's own namespace.
    let r = sb
        .runc_exec(&c2, "nslookup outside.example 127.0.0.11")
        .ok();
    assert!(r.stdout.contains(&s(OUTSIDE)), "{r:?}");
    assert!(up.asked().contains(&"outside.example udp".to_string()));
    // TCP too.
    let tcp = dig_in(&c2.netns(), INSIDE, &["+tcp", &c1.id]).expect("a TCP answer");
    assert_eq!(tcp.data, vec![s(ip1)]);
    // A container on another network does not see c1 (forwarded, not found there).
    let r = sb.runc_exec(&c3, &format!("nslookup {} 127.0.0.11", c1.id));
    assert!(!r.stdout.contains(&s(ip1)), "{r:?}");
    assert_eq!(
        ask(&c3.netns(), &name1).map(|a| a.0),
        Some(ResponseCode::NXDomain)
    );
    // Nor does the gateway network's endpoint, and its gateway still answers it.
    let gw_g = Ipv4Addr::new(10, 92, 3, 1);
    assert_eq!(
        dig_in(&format!("/run/netns/{g}"), gw_g, &[&c1.id])
            .unwrap()
            .rcode,
        "NXDOMAIN"
    );
    assert_eq!(
        dig_a(&format!("/run/netns/{g}"), gw_g, "g"),
        vec![s(sb.ip_of("g"))]
    );

    // Appearance after a plain attach returns (the hook's path, without runc around it).
    let mut appear_attach = Vec::new();
    for n in 0..3 {
        let id = format!("a{n}");
        let ns = sb.add_netns(&id);
        let path = format!("/run/netns/{ns}");
        sb.nethook(&["attach", &path, "--id", &id, "--network", "m"])
            .ok();
        let ip = sb.ip_of(&id);
        let name = format!("{id}.");
        let t = Instant::now();
        let d = time_until(Duration::from_secs(1), || resolves(&path, &name, ip));
        appear_attach.push(d.unwrap_or(t.elapsed()));
        sb.nethook(&["detach", &id]).ok();
    }

    // c1 stops: its name is gone for c2 within 100 ms of poststop, and its listener is closed.
    sb.runc_stop(&c1.id).ok();
    let t = Instant::now();
    let gone_name = time_until(Duration::from_secs(1), || {
        ask(&c2.netns(), &name1).is_some_and(|a| a.0 == ResponseCode::NXDomain)
    });
    let gone_listener = time_until(Duration::from_secs(1), || inside_count(&sb) == 2);
    eprintln!("timing dns in container: c1 resolvable in its namespace {appear_hook:?} after runc create returned; after attach returned {appear_attach:?}; c1's name gone for c2 {gone_name:?} after poststop returned, its listener closed by {gone_listener:?} ({:?})", t.elapsed());
    for d in [appear_hook, gone_name]
        .into_iter()
        .chain(appear_attach.iter().map(|d| Some(*d)))
    {
        assert!(
            d.is_some_and(|d| d < Duration::from_millis(100)),
            "{appear_hook:?} {appear_attach:?} {gone_name:?}\n{}",
            sb.dns_log()
        );
    }
    assert!(gone_listener.is_some(), "{}", sb.dns_log());
    let r = sb.runc_exec(&c2, "nslookup db");
    assert!(!r.stdout.contains(&s(ip1)), "{r:?}");

    // The others stop: no listener left, and no socket of theirs in the daemon (only the
    // gateway listener's, as before they came).
    sb.runc_stop(&c2.id).ok();
    sb.runc_stop(&c3.id).ok();
    let t = Instant::now();
    let none = time_until(Duration::from_secs(1), || {
        inside_count(&sb) == 0 && sockets_of(daemon) == base_sockets
    });
    eprintln!("timing dns in container: last listeners closed {none:?} after poststop returned");
    assert!(
        none.is_some_and(|d| d < Duration::from_millis(100)),
        "{none:?} {:?}: {} listeners, {} sockets (was {base_sockets})\n{}",
        t.elapsed(),
        inside_count(&sb),
        sockets_of(daemon),
        sb.dns_log()
    );
    assert_eq!(sb.dns_pid(), Some(daemon), "one daemon throughout");
    sb.nethook(&["detach", "g"]).ok();
    sb.assert_no_endpoints();
}

#[test]
fn in_container_listener_collisions_and_unusable_namespaces() {
    if !can_run(
        "in_container_listener_collisions_and_unusable_namespaces",
        &["socat", "ss", "dig"],
    ) {
        return;
    }
    let sb = Sandbox::new("dnsnsx");
    // A host resolver holds 0.0.0.0:53, UDP and TCP, in the sandbox's (host) namespace.
    sb.spawn_in(
        &sb.path(),
        &[
            "socat",
            "UDP4-RECVFROM:53,reuseaddr,fork",
            "SYSTEM:echo hostresolver",
        ],
    );
    sb.serve_in(&sb.path(), 53, "hostresolver");
    sb.wait_listening_udp(&sb.path(), 53);
    // Internal: nothing is forwarded, unknown names are NXDOMAIN.
    in_container_net(&sb, "m", "10.93.1.0/24", &["--internal"]);
    let attach = |id: &str| -> String {
        let ns = sb.add_netns(id);
        let path = format!("/run/netns/{ns}");
        sb.nethook(&["attach", &path, "--id", id, "--network", "m"])
            .ok();
        path
    };
    let x = attach("x");
    // A program inside blk's namespace holds 127.0.0.11:53 before it is attached.
    let blk_ns = sb.add_netns("blk");
    let blk = format!("/run/netns/{blk_ns}");
    let blocker = sb.spawn_in(
        &blk,
        &[
            "socat",
            "UDP4-RECVFROM:53,bind=127.0.0.11,fork",
            "SYSTEM:echo blocker",
        ],
    );
    sb.wait_listening_udp(&blk, 53);
    sb.nethook(&["attach", &blk, "--id", "blk", "--network", "m"])
        .ok();
    let y = attach("y");
    let (x_ip, y_ip, blk_ip) = (sb.ip_of("x"), sb.ip_of("y"), sb.ip_of("blk"));

    // The host's port 53 is no obstacle; the others resolve each other and blk.
    assert_eq!(dig_a(&x, INSIDE, "y"), vec![s(y_ip)], "{}", sb.dns_log());
    assert_eq!(dig_a(&y, INSIDE, "blk"), vec![s(blk_ip)]);
    assert_eq!(
        dig_in(&x, INSIDE, &["+tcp", "blk"]).unwrap().data,
        vec![s(blk_ip)]
    );
    assert_eq!(dig_in(&x, INSIDE, &["nowhere"]).unwrap().rcode, "NXDOMAIN");
    assert_eq!(inside_count(&sb), 2);
    // blk's own: one log line, whatever the reloads and ticks since.
    let pid = sb.dns_pid().expect("daemon");
    for _ in 0..2 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let taken = |log: &str| {
        log.lines()
            .filter(|l| l.contains("container blk:") && l.contains("taken"))
            .count()
    };
    assert_eq!(taken(&sb.dns_log()), 1, "{}", sb.dns_log());
    // Once the program is gone the daemon takes the address (tried again on each tick).
    sb.kill(blocker);
    let t = Instant::now();
    let took = time_until(Duration::from_secs(2), || resolves(&blk, "x.", x_ip));
    eprintln!("timing dns in container: blk served {took:?} after its blocker exited");
    assert!(took.is_some(), "{:?}\n{}", t.elapsed(), sb.dns_log());
    assert_eq!(inside_count(&sb), 3);

    // A namespace that is gone, and one whose path now names another namespace (a reused pid):
    // skipped by a new daemon, which serves the rest.
    let gone_ns = sb.add_netns("gone");
    let gone = format!("/run/netns/{gone_ns}");
    sb.nethook(&["attach", &gone, "--id", "gone", "--network", "m"])
        .ok();
    let other_ns = sb.add_netns("other");
    let other = format!("/run/netns/{other_ns}");
    sb.nethook(&["attach", &other, "--id", "other", "--network", "m"])
        .ok();
    let first = sb.dns_pid().expect("daemon");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(2), || sb
        .dns_pid()
        .is_none()));
    run(
        std::process::Command::new("ip").args(["netns", "del", &gone_ns]),
        None,
    )
    .ok();
    run(
        std::process::Command::new("ip").args(["netns", "del", &other_ns]),
        None,
    )
    .ok();
    run(
        std::process::Command::new("ip").args(["netns", "add", &other_ns]),
        None,
    )
    .ok();
    let z = attach("z");
    let second = sb.dns_pid().expect("a new daemon");
    assert_ne!(second, first);
    assert_eq!(dig_a(&z, INSIDE, "x"), vec![s(x_ip)], "{}", sb.dns_log());
    assert_eq!(dig_a(&x, INSIDE, "z"), vec![s(sb.ip_of("z"))]);
    assert_eq!(dig_a(&blk, INSIDE, "y"), vec![s(y_ip)]);
    assert!(
        ask(&other, "x.").is_none(),
        "a listener in a namespace that is not the recorded one"
    );
    assert_eq!(inside_count(&sb), 4, "{}", sb.dns_log());
    let log = sb.dns_log();
    let mine: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("dns[{second}]")))
        .collect();
    for (id, needle) in [
        ("gone", "network namespace"),
        ("other", "another namespace"),
    ] {
        assert_eq!(
            mine.iter()
                .filter(|l| l.contains(&format!("container {id}:")) && l.contains(needle))
                .count(),
            1,
            "{id}: {log}"
        );
    }
    assert_eq!(sb.dns_pid(), Some(second), "the daemon still runs");
    for id in ["x", "y", "z", "blk", "gone", "other"] {
        sb.nethook(&["detach", id]).ok();
    }
}
