//! Network isolation (issue 4) as a user sees it: namespaces attached with `nethook attach`
//! stand in for containers, socat servers in them answer with the source address they saw, and
//! socat clients probe by TCP and UDP. Every "cannot reach" is paired with a "can" over the same
//! path, so a drop is nethook's isolation and not a missing route. Negative probes wait a second
//! each and run in parallel.

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::time::Duration;

const TOOLS: &[&str] = &["socat", "ss", "nft"];

/// A namespace attached to one or more networks.
struct Ep {
    id: String,
    path: String,
    ip: Ipv4Addr,
}

fn net(sb: &Sandbox, name: &str, subnet: &str, extra: &[&str]) {
    let mut a = vec!["network", "create", name, "--subnet", subnet];
    a.extend_from_slice(extra);
    sb.nethook(&a).ok();
}

/// A fresh namespace with a TCP and a UDP server on port 80 answering "TAG SOURCE", attached to
/// `nets` (the first one gives `ip`), publishing `publish`.
fn attach(sb: &Sandbox, tag: &str, nets: &[&str], publish: &[&str]) -> Ep {
    let id = sb.add_netns(tag);
    let path = format!("/run/netns/{id}");
    sb.serve_source_in(&path, 80, tag);
    sb.serve_udp_in(&path, 80, tag);
    let mut a: Vec<String> = vec!["attach".into(), path.clone()];
    for n in nets {
        a.push("--network".into());
        a.push(n.to_string());
    }
    for p in publish {
        a.push("--publish".into());
        a.push(p.to_string());
    }
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    sb.nethook(&a).ok();
    let ip = sb.ip_of(&id);
    Ep { id, path, ip }
}

fn tcp(from: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
    Sandbox::tcp_get_from(from, ip, port).map(|s| s.trim().to_string())
}

fn udp(from: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
    Sandbox::udp_get_from(from, ip, port).map(|s| s.trim().to_string())
}

fn seen(tag: &str, addr: Ipv4Addr) -> Option<String> {
    Some(format!("{tag} {addr}"))
}

#[derive(Clone, Copy, Debug)]
enum P {
    Tcp,
    Udp,
}

/// Probes that must all get no answer, run in parallel (each waits about a second).
#[track_caller]
fn assert_all_dead(probes: &[(&str, &str, Ipv4Addr, u16, P)]) {
    let alive: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = probes
            .iter()
            .map(|&(what, from, ip, port, p)| {
                s.spawn(move || {
                    let dead = match p {
                        P::Tcp => Sandbox::tcp_dead_from(from, ip, port),
                        P::Udp => Sandbox::udp_dead_from(from, ip, port),
                    };
                    (!dead).then(|| format!("{what} ({p:?} {ip}:{port})"))
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(alive.is_empty(), "these answered: {alive:?}");
}

/// The peer's server: answers "peer SOURCE" on TCP 9000.
fn peer_server(sb: &Sandbox, peer: &Peer) {
    sb.serve_source_in(&peer.path(), 9000, "peer");
}

#[test]
fn containers_on_different_networks_are_isolated_unless_on_both() {
    if !can_run("iso_networks", TOOLS) {
        return;
    }
    let sb = Sandbox::new("isonet");
    let peer = sb.add_peer();
    peer_server(&sb, &peer);
    net(&sb, "a", "10.90.10.0/24", &[]);
    net(&sb, "b", "10.90.11.0/24", &[]);
    let x = attach(&sb, "x", &["a"], &[]);
    let y = attach(&sb, "y", &["b"], &[]);
    let z = attach(&sb, "z", &["a", "b"], &[]);
    let z_rows: Vec<_> = sb
        .ps()
        .into_iter()
        .filter(|r| r["id"] == z.id.as_str())
        .collect();
    assert_eq!(z_rows.len(), 2, "z is not on both networks: {z_rows:?}");
    let z_b = z_rows
        .iter()
        .find(|r| r["network"] == "b")
        .map(|r| addr_of(r["ipv4"][0].as_str().unwrap()))
        .unwrap();
    assert!(in_subnet(z.ip, "10.90.10.0/24") && in_subnet(z_b, "10.90.11.0/24"));

    // Routed traffic leaves both networks (so what is dropped below is dropped on purpose).
    assert_eq!(tcp(&x.path, peer.ip, 9000), seen("peer", peer.sandbox_ip));
    assert_eq!(tcp(&y.path, peer.ip, 9000), seen("peer", peer.sandbox_ip));
    // z, on both, reaches both, from its address on each.
    assert_eq!(tcp(&z.path, x.ip, 80), seen("x", z.ip));
    assert_eq!(tcp(&z.path, y.ip, 80), seen("y", z_b));
    assert_eq!(udp(&z.path, y.ip, 80), seen("y", z_b));
    // The host reaches both.
    assert_eq!(
        tcp(&sb.path(), x.ip, 80).map(|s| s.starts_with("x ")),
        Some(true)
    );
    assert_eq!(
        tcp(&sb.path(), y.ip, 80).map(|s| s.starts_with("y ")),
        Some(true)
    );

    assert_all_dead(&[
        ("x to y", &x.path, y.ip, 80, P::Tcp),
        ("y to x", &y.path, x.ip, 80, P::Tcp),
        ("x to y", &x.path, y.ip, 80, P::Udp),
        ("y to x", &y.path, x.ip, 80, P::Udp),
        ("x to z on b", &x.path, z_b, 80, P::Tcp),
    ]);

    for e in [&x, &y, &z] {
        sb.nethook(&["detach", &e.id]).ok();
    }
    sb.assert_no_endpoints();
}

#[test]
fn internal_network_has_no_route_out_and_no_masquerade() {
    if !can_run("iso_internal", TOOLS) {
        return;
    }
    let sb = Sandbox::new("isoint");
    let peer = sb.add_peer();
    peer_server(&sb, &peer);
    net(&sb, "int", "10.90.12.0/24", &["--internal"]);
    net(&sb, "ext", "10.90.13.0/24", &[]);
    let x = attach(&sb, "x", &["int"], &[]);
    let e = attach(&sb, "e", &["ext"], &[]);

    let routes = run(
        Sandbox::cmd_in(&x.path, "ip").args(["-4", "route", "show", "default"]),
        None,
    )
    .ok();
    assert_eq!(
        routes.stdout.trim(),
        "",
        "an internal network's container has a default route"
    );
    assert!(in_subnet(x.ip, "10.90.12.0/24"));
    assert!(
        !sb.masq4_has(x.ip),
        "masq4 holds {} of the internal network",
        x.ip
    );
    assert!(sb.masq4_has(e.ip));
    // The normal network's container gets out, masqueraded.
    assert_eq!(tcp(&e.path, peer.ip, 9000), seen("peer", peer.sandbox_ip));
    // The internal one has no route, and a route of its own making does not help.
    assert!(Sandbox::tcp_dead_from(&x.path, peer.ip, 9000));
    run(
        Sandbox::cmd_in(&x.path, "ip").args(["route", "add", "default", "via", "10.90.12.1"]),
        None,
    )
    .ok();
    assert_all_dead(&[
        ("internal to the peer", &x.path, peer.ip, 9000, P::Tcp),
        ("internal to the other network", &x.path, e.ip, 80, P::Tcp),
        ("the other network to internal", &e.path, x.ip, 80, P::Tcp),
    ]);
    // Inside the network, and from the host, it is reachable.
    let x2 = attach(&sb, "x2", &["int"], &[]);
    assert_eq!(tcp(&x2.path, x.ip, 80), seen("x", x2.ip));
    assert_eq!(
        tcp(&sb.path(), x.ip, 80),
        seen("x", Ipv4Addr::new(10, 90, 12, 1))
    );
    assert!(!sb.masq4_has(x2.ip));

    for ep in [&x, &e, &x2] {
        sb.nethook(&["detach", &ep.id]).ok();
    }
    sb.assert_no_endpoints();
}

#[test]
fn icc_false_blocks_container_to_container_but_published_ports_work() {
    if !can_run("iso_icc", TOOLS) {
        return;
    }
    let sb = Sandbox::new("isoicc");
    net(&sb, "closed", "10.90.14.0/24", &["--icc", "false"]);
    net(&sb, "open", "10.90.15.0/24", &[]);
    let gw = Ipv4Addr::new(10, 90, 14, 1);
    let x = attach(&sb, "x", &["closed"], &["8080:80", "8080:80/udp"]);
    let y = attach(&sb, "y", &["closed"], &[]);
    // The same pair on a network with icc on talks directly.
    let o1 = attach(&sb, "o1", &["open"], &[]);
    let o2 = attach(&sb, "o2", &["open"], &[]);
    assert_eq!(tcp(&o2.path, o1.ip, 80), seen("o1", o2.ip));

    // y reaches x's published port through the host's address, its own address kept.
    assert_eq!(tcp(&y.path, gw, 8080), seen("x", y.ip));
    assert_eq!(udp(&y.path, gw, 8080), seen("x", y.ip));
    // The host reaches x directly.
    assert_eq!(tcp(&sb.path(), x.ip, 80), seen("x", gw));
    assert_all_dead(&[
        ("y to x", &y.path, x.ip, 80, P::Tcp),
        ("y to x", &y.path, x.ip, 80, P::Udp),
        ("x to y", &x.path, y.ip, 80, P::Tcp),
    ]);

    for ep in [&x, &y, &o1, &o2] {
        sb.nethook(&["detach", &ep.id]).ok();
    }
    sb.assert_no_endpoints();
}

#[test]
fn host_services_are_closed_to_containers_except_allowed_ports() {
    if !can_run("iso_host", TOOLS) {
        return;
    }
    let sb = Sandbox::new("isohost");
    net(&sb, "closed", "10.90.20.0/24", &[]);
    net(
        &sb,
        "open",
        "10.90.21.0/24",
        &["--opt", "allow_host_ports=7002,7003/udp"],
    );
    let gw_closed = Ipv4Addr::new(10, 90, 20, 1);
    let gw_open = Ipv4Addr::new(10, 90, 21, 1);
    // Host services on every address of the sandbox.
    let sbp = sb.path();
    sb.serve_source_in(&sbp, 7002, "host7002");
    sb.serve_source_in(&sbp, 7004, "host7004");
    sb.serve_udp_in(&sbp, 7003, "host7003");
    sb.serve_source_in(&sbp, 7003, "host7003tcp");
    let x = attach(&sb, "x", &["closed"], &[]);
    let y = attach(&sb, "y", &["open"], &[]);
    // The host itself reaches them.
    assert_eq!(
        tcp(&sbp, Ipv4Addr::LOCALHOST, 7002),
        seen("host7002", Ipv4Addr::LOCALHOST)
    );

    // Allowed: the admin's list, on that network's gateway.
    assert_eq!(tcp(&y.path, gw_open, 7002), seen("host7002", y.ip));
    assert_eq!(udp(&y.path, gw_open, 7003), seen("host7003", y.ip));
    assert_all_dead(&[
        ("closed network to 7002", &x.path, gw_closed, 7002, P::Tcp),
        ("closed network to 7003", &x.path, gw_closed, 7003, P::Udp),
        // Another bridge's address is still this host.
        (
            "closed network to open's gateway",
            &x.path,
            gw_open,
            7002,
            P::Tcp,
        ),
        (
            "open network to a port not listed",
            &y.path,
            gw_open,
            7004,
            P::Tcp,
        ),
        ("open network, tcp 7003", &y.path, gw_open, 7003, P::Tcp),
    ]);

    for ep in [&x, &y] {
        sb.nethook(&["detach", &ep.id]).ok();
    }
    sb.assert_no_endpoints();
}

#[test]
fn host_resolver_on_the_gateway_is_reachable_when_the_admin_allows_53() {
    if !can_run("iso_dns", TOOLS) {
        return;
    }
    let sb = Sandbox::new("isodns");
    // On a DNS network the gateway's port 53 is nethook's DNS (tests/dns.rs); an admin who runs
    // a resolver of their own on the host lists 53 and gets it instead.
    net(
        &sb,
        "web",
        "10.90.24.0/24",
        &["--opt", "allow_host_ports=53,53/udp"],
    );
    net(&sb, "nodns", "10.90.25.0/24", &["--no-dns"]);
    let gw = Ipv4Addr::new(10, 90, 24, 1);
    let gw_nodns = Ipv4Addr::new(10, 90, 25, 1);
    // A resolver on the host's port 53 (every address).
    let sbp = sb.path();
    sb.serve_udp_in(&sbp, 53, "dns");
    sb.serve_source_in(&sbp, 53, "dnstcp");
    let x = attach(&sb, "x", &["web"], &[]);
    let n = attach(&sb, "n", &["nodns"], &[]);
    assert_eq!(udp(&x.path, gw, 53), seen("dns", x.ip));
    assert_eq!(tcp(&x.path, gw, 53), seen("dnstcp", x.ip));
    // Without DNS on the network, port 53 is a host service like any other.
    assert_all_dead(&[
        ("no-dns network to 53", &n.path, gw_nodns, 53, P::Udp),
        ("no-dns network to 53", &n.path, gw_nodns, 53, P::Tcp),
    ]);
    for ep in [&x, &n] {
        sb.nethook(&["detach", &ep.id]).ok();
    }
    sb.assert_no_endpoints();
}

/// A UDP server in `netns` that appends every client address to `log` and answers `TAG`.
fn udp_logger(sb: &Sandbox, netns: &str, bind: &str, port: u16, log: &std::path::Path, tag: &str) {
    sb.spawn_in(
        netns,
        &[
            "socat",
            &format!("UDP4-RECVFROM:{port},bind={bind},reuseaddr,fork"),
            &format!(
                "SYSTEM:read -r req; echo $SOCAT_PEERADDR >> {}; echo {tag}",
                log.display()
            ),
        ],
    );
    sb.wait_listening_udp(netns, port);
}

fn logged(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn loopback_published_ports_and_host_loopback_services_stay_host_only() {
    if !can_run("iso_loopback", &["socat", "ss", "nft", "sysctl"]) {
        return;
    }
    let sb = Sandbox::new("isolo");
    net(&sb, "web", "10.90.23.0/24", &[]);
    let gw = Ipv4Addr::new(10, 90, 23, 1);
    let sbp = sb.path();
    // y publishes a UDP service on the host's 127.0.0.1 only; the host has loopback-only
    // services of its own, one on the DNS port containers may use on the gateway.
    let yid = sb.add_netns("y");
    let yp = format!("/run/netns/{yid}");
    let ylog = sb.dir.join("y.log");
    let dnslog = sb.dir.join("dns.log");
    let lolog = sb.dir.join("lo.log");
    udp_logger(&sb, &yp, "0.0.0.0", 80, &ylog, "y");
    udp_logger(&sb, &sbp, "127.0.0.1", 53, &dnslog, "dns");
    udp_logger(&sb, &sbp, "127.0.0.1", 7006, &lolog, "lo");
    sb.nethook(&[
        "attach",
        &yp,
        "--network",
        "web",
        "--publish",
        "127.0.0.1:8080:80/udp",
    ])
    .ok();
    let x = attach(&sb, "x", &["web"], &[]);
    // The host reaches the published port on 127.0.0.1 (the control).
    assert_eq!(
        Sandbox::udp_get_from(&sbp, Ipv4Addr::LOCALHOST, 8080).map(|s| s.trim().to_string()),
        Some("y".to_string())
    );
    assert_eq!(logged(&ylog), vec![gw.to_string()]);

    // x sends to 127.0.0.0/8 through the gateway: a packet any container with CAP_NET_RAW can
    // write; here made with a route (127/8 no longer local in x, route_localnet on its eth0).
    for cmd in [
        "ip route del local 127.0.0.0/8 dev lo table local",
        "ip route del local 127.0.0.1 dev lo table local",
        "sysctl -qw net.ipv4.conf.eth0.route_localnet=1",
        "ip route add 127.0.0.0/8 via 10.90.23.1 dev eth0",
    ] {
        let a: Vec<&str> = cmd.split_whitespace().collect();
        run(Sandbox::cmd_in(&x.path, a[0]).args(&a[1..]), None).ok();
    }
    let lo = Ipv4Addr::LOCALHOST;
    assert_all_dead(&[
        ("x to y's 127.0.0.1-only port", &x.path, lo, 8080, P::Udp),
        ("x to the host's loopback DNS", &x.path, lo, 53, P::Udp),
        ("x to a host loopback service", &x.path, lo, 7006, P::Udp),
    ]);
    // Not even one way: nothing of x arrived anywhere.
    std::thread::sleep(Duration::from_millis(200));
    let xs = x.ip.to_string();
    assert!(
        !logged(&ylog).contains(&xs),
        "x's datagram to 127.0.0.1:8080 reached y's 127.0.0.1-only published port: y saw {:?}",
        logged(&ylog)
    );
    assert!(
        !logged(&dnslog).contains(&xs),
        "host loopback DNS saw {:?}",
        logged(&dnslog)
    );
    assert!(
        !logged(&lolog).contains(&xs),
        "host loopback service saw {:?}",
        logged(&lolog)
    );

    sb.nethook(&["detach", &yid]).ok();
    sb.nethook(&["detach", &x.id]).ok();
    sb.assert_no_endpoints();
}
