//! Port publishing (issue 4) as a user sees it: `--publish` on `nethook attach`, the
//! `nethook.publish` annotation and `hook createRuntime --publish` on real runc containers. Real
//! TCP and UDP clients (socat in the sandbox, a peer and other namespaces; busybox nc inside
//! containers) connect to the sandbox's ("host's") addresses; the servers answer with the source
//! address they saw, so every case also shows whether the client's address was kept. Then
//! `port ls`, the refusals, teardown, a firewall flush with `check`/`restore`, and a race of 50
//! parallel attaches and detaches.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

const TOOLS: &[&str] = &["socat", "ss", "nft"];

/// The test network: web, 10.90.3.0/24, gateway (the sandbox's address on bridge nh-web).
const SUBNET: &str = "10.90.3.0/24";
const GW: Ipv4Addr = Ipv4Addr::new(10, 90, 3, 1);
/// The sandbox's address toward the peer (Sandbox::add_peer).
const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn web(sb: &Sandbox) {
    sb.nethook(&["network", "create", "web", "--subnet", SUBNET])
        .ok();
}

/// A namespace attached to a network.
struct Ep {
    id: String,
    path: String,
    ip: Ipv4Addr,
}

/// `nethook attach NETNS --network NET --publish SPEC...`: the attach as a user types it.
fn attach_args(path: &str, net: &str, publish: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["attach".into(), path.into(), "--network".into(), net.into()];
    for p in publish {
        a.push("--publish".into());
        a.push(p.to_string());
    }
    a
}

fn nethook_owned(sb: &Sandbox, args: &[String]) -> Run {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    sb.nethook(&a)
}

/// A fresh namespace (its name is the endpoint id) attached to `net` publishing `publish`.
fn attach(sb: &Sandbox, short: &str, net: &str, publish: &[&str]) -> Ep {
    let id = sb.add_netns(short);
    let path = format!("/run/netns/{id}");
    nethook_owned(sb, &attach_args(&path, net, publish)).ok();
    let ip = sb.ip_of(&id);
    Ep { id, path, ip }
}

/// A fresh namespace, not attached yet.
fn netns(sb: &Sandbox, short: &str) -> (String, String) {
    let id = sb.add_netns(short);
    let path = format!("/run/netns/{id}");
    (id, path)
}

fn tcp(from: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
    Sandbox::tcp_get_from(from, ip, port).map(|s| s.trim().to_string())
}

fn udp(from: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
    Sandbox::udp_get_from(from, ip, port).map(|s| s.trim().to_string())
}

/// "TAG ADDRESS", what the servers of `serve_source_in` / `serve_udp_in` answer.
fn seen(tag: &str, addr: Ipv4Addr) -> Option<String> {
    Some(format!("{tag} {addr}"))
}

/// Everything of nethook's per-endpoint state a refusal must leave alone.
#[derive(Debug, PartialEq, Eq)]
struct Snap {
    records: Vec<String>,
    leases: Vec<String>,
    claims: Vec<String>,
    veths: Vec<String>,
    pub4: Vec<String>,
    pub4_ip: Vec<String>,
    hairpin4: Vec<String>,
    masq4: Vec<String>,
}

fn snap(sb: &Sandbox) -> Snap {
    let mut veths = sb.veths();
    veths.sort();
    Snap {
        records: sb.endpoint_files(),
        leases: sb.lease_files(),
        claims: sb.port_claims(),
        veths,
        pub4: sb.nft_keys("pub4"),
        pub4_ip: sb.nft_keys("pub4_ip"),
        hairpin4: sb.nft_keys("hairpin4"),
        masq4: sb.nft_keys("masq4"),
    }
}

/// Wait until no element of pub4/pub4_ip forwards host port `port`/`proto` (an expired
/// element is reaped by the kernel within milliseconds).
#[track_caller]
fn assert_forward_gone(sb: &Sandbox, proto: &str, port: u16) {
    assert!(
        wait_until(Duration::from_secs(3), || !sb.forward_in_nft(proto, port)),
        "nft still forwards {proto} {port}: pub4 {:?} pub4_ip {:?}",
        sb.nft_keys("pub4"),
        sb.nft_keys("pub4_ip")
    );
}

fn sysctl(sb: &Sandbox, path: &str) -> String {
    sb.sh(&["cat", path]).ok().stdout.trim().to_string()
}

#[test]
fn published_port_is_reachable_from_everywhere_with_the_source_kept() {
    if !can_run("publish_reach", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubr");
    let peer = sb.add_peer();
    web(&sb);
    let (xid, xp) = netns(&sb, "x");
    sb.serve_source_in(&xp, 80, "x");
    sb.serve_udp_in(&xp, 80, "x");
    nethook_owned(&sb, &attach_args(&xp, "web", &["8080:80", "8080:80/udp"])).ok();
    let x_ip = sb.ip_of(&xid);
    // Another container on the same network, not publishing anything.
    let y = attach(&sb, "y", "web", &[]);
    let sbp = sb.path();
    let peerp = peer.path();

    // (client netns, address it connects to, source address the server must see)
    let cases: Vec<(&str, &str, Ipv4Addr, Ipv4Addr)> = vec![
        ("a peer host via the host's address", &peerp, HOST, peer.ip),
        ("the host via its own address", &sbp, HOST, HOST),
        ("the host via its gateway address", &sbp, GW, GW),
        // 127.0.0.1 has to leave the host: masqueraded to the bridge address.
        ("the host via 127.0.0.1", &sbp, Ipv4Addr::LOCALHOST, GW),
        ("another container (hairpin)", &y.path, HOST, y.ip),
        // Its own reply would stay inside it: masqueraded to the bridge address.
        ("the container itself", &xp, HOST, GW),
    ];
    // All at once (each UDP probe waits a moment for its answer).
    let wrong: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = cases
            .iter()
            .map(|&(who, from, to, src)| {
                s.spawn(move || {
                    let mut w = Vec::new();
                    let (t, u) = (tcp(from, to, 8080), udp(from, to, 8080));
                    if t != seen("x", src) {
                        w.push(format!("TCP from {who} to {to}:8080: {t:?}, want x {src}"));
                    }
                    if u != seen("x", src) {
                        w.push(format!("UDP from {who} to {to}:8080: {u:?}, want x {src}"));
                    }
                    w
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The container's own address answers directly too (no forward involved).
    assert_eq!(tcp(&sbp, x_ip, 80), seen("x", GW));
    // route_localnet only on the bridge of the publishing container.
    let inspect = sb
        .nethook(&["--format", "json", "network", "inspect", "web"])
        .ok();
    let inspect: Value = serde_json::from_str(&inspect.stdout).expect("network inspect");
    let bridge = inspect[0]["bridge"]
        .as_str()
        .expect("bridge in inspect")
        .to_string();
    assert_eq!(
        sysctl(
            &sb,
            &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet")
        ),
        "1"
    );
    for dev in ["all", "default", "nhtpeer0", "lo"] {
        assert_eq!(
            sysctl(
                &sb,
                &format!("/proc/sys/net/ipv4/conf/{dev}/route_localnet")
            ),
            "0",
            "route_localnet set on {dev}"
        );
    }

    // `ps` shows the ports.
    let ports = sb.ps_row(&xid)["ports"].clone();
    assert_eq!(
        ports,
        serde_json::json!(["0.0.0.0:8080->80/tcp", "0.0.0.0:8080->80/udp"]),
        "ps ports"
    );

    sb.nethook(&["detach", &xid]).ok();
    sb.nethook(&["detach", &y.id]).ok();
    assert_forward_gone(&sb, "tcp", 8080);
    assert_forward_gone(&sb, "udp", 8080);
    assert!(Sandbox::tcp_dead_from(&peerp, HOST, 8080));
    assert!(Sandbox::udp_dead_from(&peerp, HOST, 8080));
    sb.assert_no_endpoints();
    assert_eq!(sb.port_claims(), Vec::<String>::new());
}

#[test]
fn host_ip_limits_the_forward_to_that_address() {
    if !can_run("publish_host_ip", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubip");
    let peer = sb.add_peer();
    // A second address of the host, routed from the peer too.
    let other = Ipv4Addr::new(198, 51, 100, 1);
    sb.sh(&["ip", "addr", "add", "198.51.100.1/32", "dev", "lo"])
        .ok();
    run(
        Sandbox::cmd_in(&peer.path(), "ip").args([
            "route",
            "add",
            "198.51.100.1/32",
            "via",
            "192.0.2.1",
        ]),
        None,
    )
    .ok();
    web(&sb);
    let (xid, xp) = netns(&sb, "x");
    sb.serve_source_in(&xp, 80, "x");
    sb.serve_udp_in(&xp, 80, "x");
    nethook_owned(
        &sb,
        &attach_args(&xp, "web", &["192.0.2.1:8081:80", "192.0.2.1:8081:80/udp"]),
    )
    .ok();
    let peerp = peer.path();
    let sbp = sb.path();

    assert_eq!(tcp(&peerp, HOST, 8081), seen("x", peer.ip));
    assert_eq!(udp(&peerp, HOST, 8081), seen("x", peer.ip));
    assert_eq!(tcp(&sbp, HOST, 8081), seen("x", HOST));
    for to in [other, GW, Ipv4Addr::LOCALHOST] {
        assert!(
            Sandbox::tcp_dead_from(&sbp, to, 8081),
            "TCP {to}:8081 forwards, only {HOST} should"
        );
        assert!(
            Sandbox::udp_dead_from(&sbp, to, 8081),
            "UDP {to}:8081 forwards, only {HOST} should"
        );
    }
    assert!(Sandbox::tcp_dead_from(&peerp, other, 8081));
    assert!(Sandbox::udp_dead_from(&peerp, other, 8081));

    // The same port on the other address is someone else's to take.
    let (zid, zp) = netns(&sb, "z");
    sb.serve_source_in(&zp, 80, "z");
    nethook_owned(&sb, &attach_args(&zp, "web", &["198.51.100.1:8081:80"])).ok();
    assert_eq!(tcp(&peerp, other, 8081), seen("z", peer.ip));
    assert_eq!(tcp(&peerp, HOST, 8081), seen("x", peer.ip));
    // ... but not on every address.
    let (_, wp) = netns(&sb, "w");
    let r = nethook_owned(&sb, &attach_args(&wp, "web", &["8081:80"]));
    r.refused(&["8081", "already published by"]);
    assert!(
        r.stderr.contains(&xid) || r.stderr.contains(&zid),
        "the refusal names no holder: {}",
        r.stderr
    );

    let rows = sb.port_ls(Some(&xid));
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["host_ip"], "192.0.2.1");
        assert_eq!(r["host_port"], 8081);
    }
    assert_eq!(
        sb.nft_keys("pub4_ip"),
        vec![
            "tcp . 192.0.2.1 . 8081",
            "tcp . 198.51.100.1 . 8081",
            "udp . 192.0.2.1 . 8081"
        ]
    );
    assert_eq!(sb.nft_keys("pub4"), Vec::<String>::new());

    sb.nethook(&["detach", &xid]).ok();
    sb.nethook(&["detach", &zid]).ok();
    assert!(wait_until(Duration::from_secs(3), || sb
        .nft_keys("pub4_ip")
        .is_empty()));
    sb.assert_no_endpoints();
}

#[test]
fn random_host_ports_come_from_the_pool_and_port_ls_shows_them() {
    if !can_run("publish_random", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubrnd");
    web(&sb);
    let (xid, xp) = netns(&sb, "x");
    sb.serve_source_in(&xp, 80, "x");
    sb.serve_udp_in(&xp, 80, "x");
    nethook_owned(&sb, &attach_args(&xp, "web", &["80", "0:80/udp"])).ok();
    let x_ip = sb.ip_of(&xid);
    let (yid, yp) = netns(&sb, "y");
    sb.serve_source_in(&yp, 80, "y");
    nethook_owned(&sb, &attach_args(&yp, "web", &["0.0.0.0::80"])).ok();
    let y_ip = sb.ip_of(&yid);

    let all = sb.port_ls(None);
    assert_eq!(all.len(), 3, "{all:?}");
    let mut ports: BTreeMap<(String, String), u16> = BTreeMap::new();
    for r in &all {
        for k in [
            "id",
            "host_ip",
            "host_port",
            "container_ip",
            "container_port",
            "protocol",
        ] {
            assert!(r.get(k).is_some(), "port ls row has no {k:?}: {r}");
        }
        let hp = r["host_port"].as_u64().unwrap() as u16;
        assert!(
            (49153..=65535).contains(&hp),
            "random host port {hp} is outside 49153-65535: {r}"
        );
        assert_eq!(r["host_ip"], "0.0.0.0");
        assert_eq!(r["container_port"], 80);
        let id = r["id"].as_str().unwrap().to_string();
        let want_ip = if id == xid { x_ip } else { y_ip };
        assert_eq!(r["container_ip"], want_ip.to_string().as_str());
        ports.insert((id, r["protocol"].as_str().unwrap().to_string()), hp);
    }
    let xt = ports[&(xid.clone(), "tcp".to_string())];
    let xu = ports[&(xid.clone(), "udp".to_string())];
    let yt = ports[&(yid.clone(), "tcp".to_string())];
    assert_ne!(xt, yt, "two endpoints got the same random port");

    // Filtered by endpoint.
    let only_x = sb.port_ls(Some(&xid));
    assert_eq!(only_x.len(), 2);
    assert!(only_x.iter().all(|r| r["id"] == xid.as_str()));
    // The table.
    let t = sb.nethook(&["port", "ls"]).ok();
    let lines: Vec<&str> = t.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", t.stdout);
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(head, vec!["ID", "PROTO", "HOST", "CONTAINER"]);
    for (id, proto, hp, ip) in [
        (&xid, "tcp", xt, x_ip),
        (&xid, "udp", xu, x_ip),
        (&yid, "tcp", yt, y_ip),
    ] {
        let want = vec![
            id.to_string(),
            proto.to_string(),
            format!("0.0.0.0:{hp}"),
            format!("{ip}:80"),
        ];
        assert!(
            lines[1..]
                .iter()
                .any(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>() == want),
            "no row {want:?} in:\n{}",
            t.stdout
        );
    }

    // They work.
    let sbp = sb.path();
    assert_eq!(tcp(&sbp, GW, xt), seen("x", GW));
    assert_eq!(udp(&sbp, GW, xu), seen("x", GW));
    assert_eq!(tcp(&sbp, GW, yt), seen("y", GW));

    sb.nethook(&["detach", &xid]).ok();
    sb.nethook(&["detach", &yid]).ok();
    assert_eq!(sb.port_ls(None), Vec::<Value>::new());
    sb.assert_no_endpoints();
}

#[test]
fn port_ranges_map_one_to_one_and_a_host_range_for_one_port_takes_a_free_one() {
    if !can_run("publish_ranges", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubrng");
    web(&sb);
    let (xid, xp) = netns(&sb, "x");
    for p in [80, 81, 82] {
        sb.serve_source_in(&xp, p, &format!("x{p}"));
    }
    for p in [80, 81] {
        sb.serve_udp_in(&xp, p, &format!("x{p}"));
    }
    nethook_owned(
        &sb,
        &attach_args(
            &xp,
            "web",
            &["8000-8002:80-82", "9000-9001:80-81/udp", "8100-8105:80"],
        ),
    )
    .ok();
    let sbp = sb.path();
    for (h, c) in [(8000, 80), (8001, 81), (8002, 82)] {
        assert_eq!(tcp(&sbp, GW, h), seen(&format!("x{c}"), GW), "tcp {h}");
    }
    for (h, c) in [(9000, 80), (9001, 81)] {
        assert_eq!(udp(&sbp, GW, h), seen(&format!("x{c}"), GW), "udp {h}");
    }
    assert_eq!(tcp(&sbp, GW, 8100), seen("x80", GW));
    // The next one of the same host range goes to the next free port.
    let (yid, yp) = netns(&sb, "y");
    sb.serve_source_in(&yp, 80, "y");
    nethook_owned(&sb, &attach_args(&yp, "web", &["8100-8105:80"])).ok();
    assert_eq!(tcp(&sbp, GW, 8101), seen("y", GW));
    assert_eq!(tcp(&sbp, GW, 8100), seen("x80", GW));

    let mut got: Vec<(String, u64, u64)> = sb
        .port_ls(Some(&xid))
        .iter()
        .map(|r| {
            (
                r["protocol"].as_str().unwrap().to_string(),
                r["host_port"].as_u64().unwrap(),
                r["container_port"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let s = |p: &str| p.to_string();
    assert_eq!(
        got,
        vec![
            (s("tcp"), 8000, 80),
            (s("tcp"), 8001, 81),
            (s("tcp"), 8002, 82),
            (s("tcp"), 8100, 80),
            (s("udp"), 9000, 80),
            (s("udp"), 9001, 81),
        ]
    );
    let ys = sb.port_ls(Some(&yid));
    assert_eq!(ys.len(), 1);
    assert_eq!(ys[0]["host_port"], 8101);

    sb.nethook(&["detach", &xid]).ok();
    sb.nethook(&["detach", &yid]).ok();
    assert!(wait_until(Duration::from_secs(3), || sb
        .nft_keys("pub4")
        .is_empty()));
    sb.assert_no_endpoints();
    assert_eq!(sb.port_claims(), Vec::<String>::new());
}

#[test]
fn a_taken_host_port_is_refused_naming_the_holder_and_nothing_is_applied() {
    if !can_run("publish_conflict", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubcf");
    web(&sb);
    let (aid, ap) = netns(&sb, "a");
    sb.serve_source_in(&ap, 80, "a");
    nethook_owned(&sb, &attach_args(&ap, "web", &["8080:80"])).ok();
    let before = snap(&sb);
    assert_eq!(before.claims, vec!["tcp/8080/0.0.0.0".to_string()]);
    assert_eq!(before.pub4.len(), 1, "{before:?}");

    let (bid, bp) = netns(&sb, "b");
    sb.serve_udp_in(&bp, 80, "b");
    // The same port, the same address on a specific host address, and a taken port after a
    // free one (whose claim must be rolled back).
    for specs in [
        vec!["8080:81"],
        vec!["10.90.3.1:8080:80"],
        vec!["9090:80", "8080:80"],
    ] {
        let r = nethook_owned(&sb, &attach_args(&bp, "web", &specs));
        r.refused(&["8080/tcp", "already published by", &aid]);
        assert_eq!(snap(&sb), before, "after refusing {specs:?}");
        assert_eq!(
            Sandbox::link_names_in(&bp).into_iter().collect::<Vec<_>>(),
            vec!["lo".to_string()],
            "{bid} got an interface"
        );
        assert!(!sb.run_dir.join("ports/tcp/9090").exists());
    }
    assert_eq!(
        std::fs::read_to_string(sb.run_dir.join("ports/tcp/8080/0.0.0.0"))
            .unwrap()
            .trim(),
        aid
    );
    // The holder still works.
    assert_eq!(tcp(&sb.path(), GW, 8080), seen("a", GW));

    // The same port with another protocol is free.
    nethook_owned(&sb, &attach_args(&bp, "web", &["8080:80/udp"])).ok();
    assert_eq!(udp(&sb.path(), GW, 8080), seen("b", GW));
    assert_eq!(tcp(&sb.path(), GW, 8080), seen("a", GW));
    assert_eq!(
        sb.port_claims(),
        vec![
            "tcp/8080/0.0.0.0".to_string(),
            "udp/8080/0.0.0.0".to_string()
        ]
    );

    sb.nethook(&["detach", &aid]).ok();
    sb.nethook(&["detach", &bid]).ok();
    sb.assert_no_endpoints();
    assert_eq!(sb.port_claims(), Vec::<String>::new());
}

#[test]
fn bad_publish_specs_are_refused_and_nothing_is_applied() {
    if !can_run("publish_bad", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubbad");
    web(&sb);
    // Something published already, so "nothing applied" is checked against a live table.
    let (hid, hp) = netns(&sb, "h");
    nethook_owned(&sb, &attach_args(&hp, "web", &["7000:80"])).ok();
    let before = snap(&sb);
    let (_, xp) = netns(&sb, "x");
    let cases: &[(&[&str], &[&str])] = &[
        (&["0"], &["\"0\"", "container port 0"]),
        (&["8080:0"], &["\"8080:0\"", "container port 0"]),
        (&["8080:0/udp"], &["container port 0"]),
        (&["90-80"], &["\"90-80\"", "90-80 is reversed"]),
        (&["8090-8080:80"], &["8090-8080 is reversed"]),
        (&["8000-8002:80-81"], &["differ in length"]),
        (&["8000-8001:80-82/udp"], &["differ in length"]),
        (&["80/icmp"], &["unknown protocol", "icmp"]),
        (&["8080:80/tcpx"], &["unknown protocol", "tcpx"]),
        (
            &["203.0.113.9:8080:80"],
            &["203.0.113.9", "not an address of this host"],
        ),
        (&["1-20000"], &["20000", "49153-65535"]),
        (&["0:1-16384/udp"], &["16384", "49153-65535"]),
        (&["70000:80"], &["70000"]),
        // A good spec does not make a bad one pass, nor stay applied.
        (&["8080:80", "81-80"], &["81-80 is reversed"]),
        (&["8080:80", "198.51.100.7:8081:80"], &["198.51.100.7"]),
    ];
    for (specs, needles) in cases {
        let r = nethook_owned(&sb, &attach_args(&xp, "web", specs));
        r.refused(needles);
        assert!(r.stderr.contains("publish"), "{}", r.stderr);
        assert_eq!(snap(&sb), before, "after refusing {specs:?}");
        assert_eq!(
            Sandbox::link_names_in(&xp).into_iter().collect::<Vec<_>>(),
            vec!["lo".to_string()],
            "{specs:?}: the namespace got an interface"
        );
    }

    // The hook front door: a bad annotation and a bad hook argument.
    let pid = sb.spawn_unshared_sleep();
    for (ann, args, needle) in [
        (vec![("nethook.publish", "8080:80,80/icmp")], vec![], "icmp"),
        (vec![], vec!["--publish", "0"], "container port 0"),
    ] {
        let bundle = hand_bundle(&sb, "hb", &ann);
        let state = create_state("badpub", Some(pid), &bundle);
        let mut a = vec!["hook", "createRuntime", "--network", "web"];
        a.extend(args);
        sb.nethook_stdin(&a, state.as_bytes())
            .refused(&["badpub", needle]);
        assert_eq!(snap(&sb), before);
        assert!(!bundle.join("rootfs/etc").exists());
        assert_eq!(
            Sandbox::link_names_in(&format!("/proc/{pid}/ns/net"))
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["lo".to_string()]
        );
    }
    sb.nethook(&["detach", &hid]).ok();
    sb.assert_no_endpoints();
}

#[test]
fn detach_removes_exactly_that_containers_forwards() {
    if !can_run("publish_teardown", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubtd");
    let peer = sb.add_peer();
    web(&sb);
    let (aid, ap) = netns(&sb, "a");
    let (bid, bp) = netns(&sb, "b");
    for (p, tag) in [(&ap, "a"), (&bp, "b")] {
        sb.serve_source_in(p, 80, tag);
        sb.serve_udp_in(p, 80, tag);
    }
    nethook_owned(&sb, &attach_args(&ap, "web", &["8080:80", "8080:80/udp"])).ok();
    nethook_owned(&sb, &attach_args(&bp, "web", &["8081:80", "8081:80/udp"])).ok();
    let a_ip = sb.ip_of(&aid);
    let b_ip = sb.ip_of(&bid);
    let pp = peer.path();
    assert_eq!(tcp(&pp, HOST, 8080), seen("a", peer.ip));
    assert_eq!(udp(&pp, HOST, 8080), seen("a", peer.ip));
    assert_eq!(tcp(&pp, HOST, 8081), seen("b", peer.ip));
    assert_eq!(
        sb.nft_keys("pub4"),
        vec!["tcp . 8080", "tcp . 8081", "udp . 8080", "udp . 8081"]
    );
    assert!(
        sb.nft_keys("hairpin4")
            .iter()
            .any(|k| k.contains(&a_ip.to_string())),
        "hairpin4: {:?}",
        sb.nft_keys("hairpin4")
    );

    sb.nethook(&["detach", &aid]).ok();
    assert_forward_gone(&sb, "tcp", 8080);
    assert_forward_gone(&sb, "udp", 8080);
    assert!(wait_until(Duration::from_secs(3), || !sb
        .nft_keys("hairpin4")
        .iter()
        .any(|k| k.contains(&a_ip.to_string()))));
    assert!(
        Sandbox::tcp_dead_from(&pp, HOST, 8080),
        "a's TCP forward works after detach"
    );
    assert!(
        Sandbox::udp_dead_from(&pp, HOST, 8080),
        "a's UDP forward works after detach"
    );
    // b keeps everything.
    assert_eq!(sb.nft_keys("pub4"), vec!["tcp . 8081", "udp . 8081"]);
    assert!(sb
        .nft_keys("hairpin4")
        .iter()
        .any(|k| k.contains(&b_ip.to_string())));
    assert_eq!(tcp(&pp, HOST, 8081), seen("b", peer.ip));
    assert_eq!(udp(&pp, HOST, 8081), seen("b", peer.ip));
    assert_eq!(
        sb.port_claims(),
        vec![
            "tcp/8081/0.0.0.0".to_string(),
            "udp/8081/0.0.0.0".to_string()
        ]
    );
    // a's port is free again.
    let (cid, cp) = netns(&sb, "c");
    sb.serve_source_in(&cp, 80, "c");
    nethook_owned(&sb, &attach_args(&cp, "web", &["8080:80"])).ok();
    assert_eq!(tcp(&pp, HOST, 8080), seen("c", peer.ip));

    sb.nethook(&["detach", &bid]).ok();
    sb.nethook(&["detach", &cid]).ok();
    assert!(wait_until(Duration::from_secs(3), || sb
        .nft_keys("pub4")
        .is_empty()
        && sb.nft_keys("hairpin4").is_empty()));
    sb.assert_no_endpoints();
    assert_eq!(sb.port_claims(), Vec::<String>::new());
}

#[test]
fn restore_brings_forwards_back_after_a_flush_and_check_reports_what_is_missing() {
    if !can_run("publish_restore", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubrst");
    web(&sb);
    let (aid, ap) = netns(&sb, "a");
    sb.serve_source_in(&ap, 80, "a");
    sb.serve_udp_in(&ap, 80, "a");
    nethook_owned(&sb, &attach_args(&ap, "web", &["8080:80", "8080:80/udp"])).ok();
    let sbp = sb.path();
    sb.nethook(&["check"]).ok();

    // One element gone: check names it.
    sb.sh(&[
        "nft",
        "delete",
        "element",
        "inet",
        "nethook",
        "pub4",
        "{ udp . 8080 }",
    ])
    .ok();
    assert!(Sandbox::udp_dead_from(&sbp, GW, 8080));
    let c = sb.nethook(&["check"]);
    assert_eq!(c.code, 1, "check: {c:?}");
    assert!(
        c.stdout.contains(&aid) && c.stdout.contains("0.0.0.0:8080->80/udp"),
        "check does not name the missing forward: {c:?}"
    );
    assert!(!c.stdout.contains("->80/tcp"), "{}", c.stdout);
    assert!(c.stderr.starts_with("nethook: check:"), "{}", c.stderr);

    // What a firewalld reload does.
    sb.sh(&["nft", "flush", "ruleset"]).ok();
    assert!(sb.nft_table().is_none());
    assert!(Sandbox::tcp_dead_from(&sbp, GW, 8080));
    let c = sb.nethook(&["check"]);
    assert_eq!(c.code, 1, "check: {c:?}");
    assert!(
        c.stdout.contains("table inet nethook is missing"),
        "check does not name the missing table: {c:?}"
    );
    assert_eq!(c.stderr.trim_end().lines().count(), 1, "{}", c.stderr);
    assert!(c.stderr.starts_with("nethook: check:"), "{}", c.stderr);
    let j = sb.nethook(&["--format", "json", "check"]);
    assert_eq!(j.code, 1);
    let v: Value = serde_json::from_str(&j.stdout).expect("check --format json");
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|f| f["problem"].as_str().unwrap_or("").contains("inet nethook")),
        "{v}"
    );

    sb.nethook(&["restore"]).ok();
    assert_eq!(tcp(&sbp, GW, 8080), seen("a", GW));
    assert_eq!(udp(&sbp, GW, 8080), seen("a", GW));
    assert_eq!(sb.nft_keys("pub4"), vec!["tcp . 8080", "udp . 8080"]);
    assert!(sb.masq4_has(sb.ip_of(&aid)));
    let c = sb.nethook(&["check"]).ok();
    assert_eq!(c.stdout, "");

    sb.nethook(&["detach", &aid]).ok();
    sb.assert_no_endpoints();
}

#[test]
fn fifty_parallel_attaches_and_detaches_keep_everyone_elses_forwards() {
    if !can_run("publish_race", TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubrace");
    web(&sb);
    const FIRST: usize = 30;
    const GONE: usize = 15;
    const LATER: usize = 20;
    let port = |i: usize| 10000 + i as u16;
    // 50 namespaces, each with a server answering with the endpoint's name (made in parallel:
    // one by one this takes seconds).
    let eps: Vec<(String, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..FIRST + LATER)
            .map(|i| {
                let sb = &sb;
                s.spawn(move || {
                    let (id, p) = netns(sb, &format!("r{i}"));
                    sb.spawn_in(
                        &p,
                        &[
                            "socat",
                            "TCP-LISTEN:80,reuseaddr,fork",
                            &format!("SYSTEM:echo {id}"),
                        ],
                    );
                    sb.wait_listening(&p, 80);
                    (id, p)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let attach_one = |i: usize| {
        let (_, p) = &eps[i];
        nethook_owned(&sb, &attach_args(p, "web", &[&format!("{}:80", port(i))]))
    };
    // 30 at once.
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..FIRST).map(|i| s.spawn(move || attach_one(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in runs {
        r.ok();
    }
    // 15 of them leave while 20 new ones come, all at once.
    let runs: Vec<Run> = std::thread::scope(|s| {
        let mut hs = Vec::new();
        for i in 0..GONE {
            let sb = &sb;
            let id = eps[i * 2].0.clone();
            hs.push(s.spawn(move || sb.nethook(&["detach", &id])));
        }
        for i in FIRST..FIRST + LATER {
            hs.push(s.spawn(move || attach_one(i)));
        }
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in runs {
        r.ok();
    }
    let gone: BTreeSet<usize> = (0..GONE).map(|i| i * 2).collect();
    let alive: Vec<usize> = (0..FIRST + LATER).filter(|i| !gone.contains(i)).collect();
    assert_eq!(alive.len(), FIRST - GONE + LATER);

    // Every forward, probed in parallel: the survivors answer with their own name, the
    // removed ones do not answer at all.
    let sbp = sb.path();
    let wrong: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..FIRST + LATER)
            .map(|i| {
                let (sbp, eps, gone) = (&sbp, &eps, &gone);
                s.spawn(move || {
                    let got = tcp(sbp, GW, port(i));
                    let want = (!gone.contains(&i)).then(|| eps[i].0.clone());
                    (got != want).then(|| {
                        format!(
                            "host port {} of {}: {got:?}, want {want:?}",
                            port(i),
                            eps[i].0
                        )
                    })
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(wrong.is_empty(), "forwards after the race: {wrong:#?}");
    let want: Vec<String> = {
        let mut v: Vec<String> = alive
            .iter()
            .map(|&i| format!("tcp . {}", port(i)))
            .collect();
        v.sort();
        v
    };
    assert!(
        wait_until(Duration::from_secs(3), || sb.nft_keys("pub4") == want),
        "pub4 {:?}, want {want:?}",
        sb.nft_keys("pub4")
    );
    // The records agree: port ls, addresses, masquerade elements, claims.
    let rows = sb.port_ls(None);
    let got: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["host_port"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect: BTreeMap<String, u64> = alive
        .iter()
        .map(|&i| (eps[i].0.clone(), port(i) as u64))
        .collect();
    assert_eq!(got, expect);
    let ips: BTreeSet<Ipv4Addr> = sb
        .ps()
        .iter()
        .map(|r| addr_of(r["ipv4"][0].as_str().unwrap()))
        .collect();
    assert_eq!(ips.len(), alive.len(), "duplicate addresses");
    assert!(
        wait_until(Duration::from_secs(3), || sb.nft_keys("masq4").len()
            == alive.len()),
        "masq4 {:?}",
        sb.nft_keys("masq4")
    );
    assert_eq!(sb.port_claims().len(), alive.len());
    assert_eq!(sb.veths().len(), alive.len());
    sb.nethook(&["check"]).ok();

    // And all of them leave at once.
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = alive
            .iter()
            .map(|&i| {
                let sb = &sb;
                let id = eps[i].0.clone();
                s.spawn(move || sb.nethook(&["detach", &id]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in runs {
        r.ok();
    }
    sb.assert_no_endpoints();
    assert_eq!(sb.port_claims(), Vec::<String>::new());
    assert!(wait_until(Duration::from_secs(3), || sb
        .nft_keys("pub4")
        .is_empty()
        && sb.nft_keys("masq4").is_empty()));
}

// ---- real runc containers -------------------------------------------------------------------

#[test]
fn runc_containers_publish_by_annotation_and_by_hook_argument() {
    if !can_run("publish_runc", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubrunc");
    let peer = sb.add_peer();
    let mut ba = sb.bundle("pa", "exec nc -ll -p 80 -e echo hello-from-a");
    ba.annotate("nethook.publish", "8090:80");
    let a = sb.runc_start(&ba);
    let mut bb = sb.bundle("pb", "exec nc -ll -p 80 -e echo hello-from-b");
    bb.hook_args(&["--publish", "8091:80"]);
    let b = sb.runc_start(&bb);
    sb.wait_listening_ctr(&a, 80);
    sb.wait_listening_ctr(&b, 80);
    let a_ip = sb.ip_of(&a.id);
    let b_ip = sb.ip_of(&b.id);

    let pp = peer.path();
    let sbp = sb.path();
    let hello_a = Some("hello-from-a".to_string());
    let hello_b = Some("hello-from-b".to_string());
    assert_eq!(tcp(&pp, HOST, 8090), hello_a, "peer to a's published port");
    assert_eq!(tcp(&pp, HOST, 8091), hello_b, "peer to b's published port");
    assert_eq!(tcp(&sbp, Ipv4Addr::LOCALHOST, 8090), hello_a);
    assert_eq!(tcp(&sbp, HOST, 8091), hello_b);
    // From inside a container, with busybox nc: the other one's port (hairpin), and its own.
    let get = |c: &Ctr, port: u16| {
        sb.runc_exec(c, &format!("timeout 3 nc {HOST} {port} </dev/null"))
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(get(&b, 8090), "hello-from-a", "b to a's published port");
    assert_eq!(get(&a, 8090), "hello-from-a", "a to its own published port");
    assert_eq!(get(&a, 8091), "hello-from-b", "a to b's published port");

    let rows = sb.port_ls(None);
    let mut got: Vec<(String, String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["container_ip"].as_str().unwrap().to_string(),
                r["host_port"].as_u64().unwrap(),
                r["container_port"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (a.id.clone(), a_ip.to_string(), 8090, 80),
        (b.id.clone(), b_ip.to_string(), 8091, 80),
    ];
    want.sort();
    assert_eq!(got, want);

    // a stops: its forward goes, b's stays.
    sb.runc_stop(&a.id).ok();
    assert_forward_gone(&sb, "tcp", 8090);
    assert!(
        Sandbox::tcp_dead_from(&pp, HOST, 8090),
        "a's port answers after it stopped"
    );
    assert_eq!(tcp(&pp, HOST, 8091), hello_b);
    assert!(sb.forward_in_nft("tcp", 8091));
    assert_eq!(sb.port_claims(), vec!["tcp/8091/0.0.0.0".to_string()]);

    sb.runc_stop(&b.id).ok();
    assert_forward_gone(&sb, "tcp", 8091);
    sb.assert_no_endpoints();
    assert_eq!(sb.port_claims(), Vec::<String>::new());
}

#[test]
fn runc_refuses_a_container_with_a_bad_or_taken_publish() {
    if !can_run("publish_runc_bad", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("pubruncbad");
    let mut ba = sb.bundle("hold", "exec sleep 60");
    ba.annotate("nethook.publish", "8090:80");
    let a = sb.runc_start(&ba);
    let before = snap(&sb);
    for (publish, needle) in [
        ("8090:80", format!("already published by {}", a.id)),
        ("80-70", "reversed".to_string()),
    ] {
        let mut b = sb.bundle("bad", "echo this-must-not-run");
        b.annotate("nethook.publish", publish);
        let r = sb.runc_run(&b);
        assert_ne!(r.code, 0, "runc run succeeded: {}", r.stdout);
        assert!(!r.stdout.contains("this-must-not-run"));
        assert!(
            r.stderr
                .contains(&format!("nethook: container {}: publish", b.id)),
            "runc does not quote nethook's message:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains(&needle),
            "{needle:?} not in:\n{}",
            r.stderr
        );
        assert_eq!(snap(&sb), before, "after refusing {publish}");
    }
    sb.runc_stop(&a.id).ok();
    sb.assert_no_endpoints();
    assert_eq!(sb.port_claims(), Vec::<String>::new());
}
