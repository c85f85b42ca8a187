//! Container DNS (issue 5), as containers see it: real `dig` from attached namespaces and busybox
//! `nslookup` inside runc containers, a fake upstream in a peer namespace, a host resolver
//! already holding 0.0.0.0:53, the 100 ms appearance and disappearance, and the daemon's life
//! (one per sandbox, detached, the fewest capabilities, gone within 2 s of the last endpoint).

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &["dig", "nft", "ss"];

const GW_A: Ipv4Addr = Ipv4Addr::new(10, 91, 1, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(10, 91, 2, 1);
const GW_I: Ipv4Addr = Ipv4Addr::new(10, 91, 3, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn ns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Networks a (10.91.1.0/24), b (10.91.2.0/24) and internal i (10.91.3.0/24), all forwarding to
/// `upstream` when given.
fn networks(sb: &Sandbox, upstream: Option<Ipv4Addr>) {
    let up = upstream.map(|u| u.to_string());
    for (name, subnet, internal) in [
        ("a", "10.91.1.0/24", false),
        ("b", "10.91.2.0/24", false),
        ("i", "10.91.3.0/24", true),
    ] {
        let mut args = vec!["network", "create", name, "--subnet", subnet];
        if internal {
            args.push("--internal");
        }
        if let Some(u) = &up {
            args.extend(["--dns-upstream", u.as_str()]);
        }
        sb.nethook(&args).ok();
    }
}

/// Attach a new namespace; returns its path and address on its first network.
fn attach(sb: &Sandbox, short: &str, args: &[&str]) -> (String, Ipv4Addr) {
    let name = sb.add_netns(short);
    let path = ns_path(&name);
    let mut a = vec!["attach", path.as_str(), "--id", short];
    a.extend_from_slice(args);
    sb.nethook(&a).ok();
    (path, sb.ip_of(short))
}

/// The address of endpoint `id` on network `net`.
fn ip_on(sb: &Sandbox, id: &str, net: &str) -> Ipv4Addr {
    let row = sb
        .ps()
        .into_iter()
        .find(|r| r["id"] == id && r["network"] == net)
        .unwrap_or_else(|| panic!("{id} not on {net}"));
    addr_of(row["ipv4"][0].as_str().unwrap())
}

fn s(ip: Ipv4Addr) -> String {
    ip.to_string()
}

#[test]
fn names_aliases_network_suffix_ptr_and_isolation() {
    if !can_run("names_aliases_network_suffix_ptr_and_isolation", TOOLS) {
        return;
    }
    let sb = Sandbox::new("dns");
    let peer = sb.add_peer();
    let up = FakeUpstream::start(&peer.path(), &[]);
    networks(&sb, Some(peer.ip));
    let (_x, x_ip) = attach(
        &sb,
        "x",
        &[
            "--network",
            "a",
            "--hostname",
            "xhost",
            "--alias",
            "xa",
            "--alias",
            "Web",
        ],
    );
    let (y, _) = attach(&sb, "y", &["--network", "a"]);
    let (z, z_ip) = attach(&sb, "z", &["--network", "b"]);
    let (w, w_ip) = attach(&sb, "w", &["--network", "a", "--network", "b"]);
    let w_b = ip_on(&sb, "w", "b");

    // Name, aliases (any case), NAME.NETWORK, PTR, from a neighbour on a.
    for name in ["xhost", "xa", "web", "WEB", "xhost.a", "xa.a"] {
        assert_eq!(dig_a(&y, GW_A, name), vec![s(x_ip)], "{name} from y");
    }
    let ptr = dig_in(&y, GW_A, &["-x", &s(x_ip)]).unwrap();
    assert_eq!(
        (ptr.rcode.as_str(), ptr.data.clone()),
        ("NOERROR", vec!["xhost.".to_string()])
    );
    // A name we own without IPv6: NODATA, never NXDOMAIN (glibc asks AAAA too).
    let aaaa = dig_in(&y, GW_A, &["xhost", "AAAA"]).unwrap();
    assert_eq!((aaaa.rcode.as_str(), aaaa.data.len()), ("NOERROR", 0));
    // Over TCP too.
    assert_eq!(
        dig_in(&y, GW_A, &["+tcp", "xhost"]).unwrap().data,
        vec![s(x_ip)]
    );
    // The container's own name.
    assert_eq!(dig_a(&y, GW_A, "y"), vec![s(sb.ip_of("y"))]);

    // Network b does not see a's names: they go upstream (and are not found there).
    for name in ["xhost", "xa", "xhost.a", "y"] {
        let r = dig_in(&z, GW_B, &[name]).unwrap();
        assert_eq!(r.rcode, "NXDOMAIN", "{name} from z: {r:?}");
    }
    assert!(
        up.asked().contains(&"xhost.a udp".to_string()),
        "{:?}",
        up.asked()
    );
    let ptr = dig_in(&z, GW_B, &["-x", &s(x_ip)]).unwrap();
    assert_eq!(ptr.rcode, "NXDOMAIN", "{ptr:?}");
    // Aiming at a's gateway from b: port 53 is not redirected there (not z's gateway) and the
    // input chain drops it; the daemon's port answers REFUSED (z is not on a).
    assert!(dig_in(&z, GW_A, &["xhost"]).is_none());
    let direct = dig_in(&z, GW_A, &["-p", "15353", "xhost"]).unwrap();
    assert_eq!(direct.rcode, "REFUSED");

    // A container on both sees both, through either gateway.
    for gw in [GW_A, GW_B] {
        assert_eq!(dig_a(&w, gw, "xhost"), vec![s(x_ip)]);
        assert_eq!(dig_a(&w, gw, "z"), vec![s(z_ip)]);
        assert_eq!(dig_a(&w, gw, "z.b"), vec![s(z_ip)]);
    }
    // Its own addresses, the asking network's first; from z only the one on b.
    assert_eq!(dig_a(&w, GW_B, "w"), vec![s(w_b), s(w_ip)]);
    assert_eq!(dig_a(&z, GW_B, "w"), vec![s(w_b)]);
    assert_eq!(dig_a(&z, GW_B, "w.a"), Vec::<String>::new());
    sb.nethook(&["detach", "x"]).ok();
    sb.nethook(&["detach", "y"]).ok();
    sb.nethook(&["detach", "z"]).ok();
    sb.nethook(&["detach", "w"]).ok();
}

#[test]
fn forwarding_tcp_fallback_and_internal_networks() {
    if !can_run("forwarding_tcp_fallback_and_internal_networks", TOOLS) {
        return;
    }
    let sb = Sandbox::new("dnsfw");
    let peer = sb.add_peer();
    let up = FakeUpstream::start(&peer.path(), &[("outside.example", OUTSIDE)]);
    networks(&sb, Some(peer.ip));
    let (x, _) = attach(&sb, "x", &["--network", "a"]);
    let (i, i_ip) = attach(&sb, "s", &["--network", "i"]);

    assert_eq!(dig_a(&x, GW_A, "outside.example"), vec![s(OUTSIDE)]);
    assert_eq!(
        dig_in(&x, GW_A, &["nowhere.example"]).unwrap().rcode,
        "NXDOMAIN"
    );
    // Other types are forwarded too.
    let mx = dig_in(&x, GW_A, &["outside.example", "MX"]).unwrap();
    assert_eq!((mx.rcode.as_str(), mx.data.len()), ("NOERROR", 0));
    assert!(up.asked().contains(&"outside.example udp".to_string()));
    // Truncated over UDP upstream: the daemon asks again over TCP and the whole answer fits
    // dig's EDNS size; +ignore: dig itself would not retry over TCP.
    let big = dig_in(&x, GW_A, &["+ignore", FakeUpstream::BIG]).unwrap();
    assert_eq!(
        (big.rcode.as_str(), big.data.len(), big.truncated),
        ("NOERROR", 40, false),
        "{big:?}"
    );
    let big = FakeUpstream::BIG.trim_end_matches('.');
    assert!(
        up.asked().contains(&format!("{big} udp")),
        "{:?}",
        up.asked()
    );
    assert!(
        up.asked().contains(&format!("{big} tcp")),
        "{:?}",
        up.asked()
    );
    // Without EDNS (512 bytes) it does not fit: truncated, and over TCP it comes whole.
    let small = dig_in(&x, GW_A, &["+ignore", "+noedns", big]).unwrap();
    assert!(small.truncated, "{small:?}");
    assert_eq!(dig_in(&x, GW_A, &["+tcp", big]).unwrap().data.len(), 40);

    // The internal network answers its own names and forwards nothing.
    let before = up.asked().len();
    assert_eq!(dig_a(&i, GW_I, "s"), vec![s(i_ip)]);
    for name in ["outside.example", "x"] {
        let r = dig_in(&i, GW_I, &[name]).unwrap();
        assert_eq!(r.rcode, "NXDOMAIN", "{name}: {r:?}");
    }
    assert_eq!(
        dig_in(&i, GW_I, &["-x", "198.51.100.7"]).unwrap().rcode,
        "NXDOMAIN"
    );
    assert_eq!(
        up.asked().len(),
        before,
        "internal network forwarded: {:?}",
        up.asked()
    );
    sb.nethook(&["detach", "x"]).ok();
    sb.nethook(&["detach", "s"]).ok();
}

#[test]
fn a_host_resolver_on_port_53_does_not_matter() {
    if !can_run(
        "a_host_resolver_on_port_53_does_not_matter",
        &["dig", "socat", "ss"],
    ) {
        return;
    }
    let sb = Sandbox::new("dns53");
    // Someone else's resolver holds 0.0.0.0:53, UDP and TCP, before nethook does anything.
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
    networks(&sb, None);
    let (x, _) = attach(&sb, "x", &["--network", "a"]);
    let (_y, y_ip) = attach(&sb, "y", &["--network", "a", "--alias", "why"]);
    assert_eq!(dig_a(&x, GW_A, "y"), vec![s(y_ip)]);
    assert_eq!(
        dig_in(&x, GW_A, &["+tcp", "why"]).unwrap().data,
        vec![s(y_ip)]
    );
    // The host's own queries to port 53 still reach its resolver (socat, no DNS at all).
    assert!(dig_in(&sb.path(), GW_A, &["y"]).is_none());
    // Where the admin lists 53 in allow_host_ports, the host's resolver keeps the gateway's
    // port 53 (no redirect), over UDP and TCP.
    sb.nethook(&[
        "network",
        "create",
        "own",
        "--subnet",
        "10.91.7.0/24",
        "--opt",
        "allow_host_ports=53,53/udp",
    ])
    .ok();
    let (o, _) = attach(&sb, "o", &["--network", "own"]);
    let gw_own = Ipv4Addr::new(10, 91, 7, 1);
    let udp = Sandbox::udp_get_from(&o, gw_own, 53);
    assert_eq!(udp.as_deref().map(str::trim), Some("hostresolver"));
    let tcp = Sandbox::tcp_get_from(&o, gw_own, 53);
    assert_eq!(tcp.as_deref().map(str::trim), Some("hostresolver"));
    for id in ["x", "y", "o"] {
        sb.nethook(&["detach", id]).ok();
    }
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

#[test]
fn new_names_appear_and_go_within_100ms() {
    if !can_run("new_names_appear_and_go_within_100ms", TOOLS) {
        return;
    }
    let sb = Sandbox::new("dnst");
    networks(&sb, None);
    let server = SocketAddrV4::new(GW_I, 53);
    let wait = Duration::from_millis(200);
    // The first endpoint starts the daemon: resolvable at once all the same.
    let t = Instant::now();
    let (x, x_ip) = attach(&sb, "x", &["--network", "i"]);
    let first_attach = t.elapsed();
    let first = time_until(Duration::from_secs(1), || {
        query_in(&x, server, "x.", wait) == Some((ResponseCode::NoError, vec![x_ip]))
    });
    eprintln!("timing dns: first attach (daemon start) {first_attach:?}, x resolvable {first:?} after it returned");
    assert!(
        first.is_some_and(|d| d < Duration::from_millis(100)),
        "{first:?}\n{}",
        sb.dns_log()
    );

    let (mut appear, mut gone) = (Vec::new(), Vec::new());
    for n in 0..5 {
        let id = format!("y{n}");
        let ns = sb.add_netns(&id);
        let path = ns_path(&ns);
        sb.nethook(&["attach", &path, "--id", &id, "--network", "i"])
            .ok();
        let t = Instant::now();
        let name = format!("{id}.");
        let d = time_until(
            Duration::from_secs(1),
            || matches!(query_in(&x, server, &name, wait), Some((ResponseCode::NoError, ips)) if !ips.is_empty()),
        );
        appear.push(d.unwrap_or(t.elapsed()));
        sb.nethook(&["detach", &id]).ok();
        let t = Instant::now();
        let d = time_until(Duration::from_secs(1), || {
            matches!(
                query_in(&x, server, &name, wait),
                Some((ResponseCode::NXDomain, _))
            )
        });
        gone.push(d.unwrap_or(t.elapsed()));
    }
    eprintln!("timing dns: resolvable after attach returned {appear:?}; gone after detach returned {gone:?}");
    for d in appear.iter().chain(&gone) {
        assert!(*d < Duration::from_millis(100), "{appear:?} {gone:?}");
    }

    // Queries per second for a container name, for the record: one client, 32 queries in
    // flight, for 500 ms (local namespaces only).
    let (n, lost, took) = in_netns(&x, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let q = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1,
        ];
        let mut buf = [0u8; 512];
        let (mut sent, mut got) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(500) {
            while sent - got < 32 {
                sock.send_to(&q, server).unwrap();
                sent += 1;
            }
            match sock.recv(&mut buf) {
                Ok(_) => got += 1,
                // A lost datagram: the window moves on.
                Err(_) => got = sent,
            }
        }
        let took = start.elapsed();
        let mut answered = got;
        while sock.recv(&mut buf).is_ok() {
            answered += 1;
        }
        (answered, sent - answered.min(sent), took)
    });
    eprintln!(
        "timing dns: {n} answers in {took:?} ({:.0} qps, one client, 32 in flight, {lost} lost)",
        n as f64 / took.as_secs_f64()
    );
    sb.nethook(&["detach", "x"]).ok();
}

/// True when process `pid` has ended (gone, or a zombie: orphans are reaped by init, and this
/// machine's init reaps them late).
fn exited(pid: u32) -> bool {
    let st = proc_status(pid);
    st.is_empty() || status_field(&st, "State").starts_with('Z')
}

fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn one_detached_daemon_with_least_capabilities_gone_2s_after_the_last() {
    if !can_run(
        "one_detached_daemon_with_least_capabilities_gone_2s_after_the_last",
        TOOLS,
    ) {
        return;
    }
    let sb = Sandbox::new("dnsd");
    networks(&sb, None);
    sb.nethook(&[
        "network",
        "create",
        "off",
        "--subnet",
        "10.91.4.0/24",
        "--no-dns",
    ])
    .ok();
    assert_eq!(sb.dns_pid(), None);
    // No DNS on the network: no daemon, and resolv.conf would name the host's servers.
    let (_o, _) = attach(&sb, "o", &["--network", "off"]);
    assert_eq!(sb.dns_pid(), None, "a daemon for a network without DNS");

    // Eight attaches at once to a network with DNS: exactly one daemon.
    let handles: Vec<_> = (0..8)
        .map(|n| {
            let id = format!("p{n}");
            let ns = sb.add_netns(&id);
            let (bin, c, r) = (BIN, sb.config_dir.clone(), sb.run_dir.clone());
            let sandbox = sb.path();
            std::thread::spawn(move || {
                run(
                    Sandbox::cmd_in(&sandbox, bin)
                        .arg("--config-dir")
                        .arg(&c)
                        .arg("--run-dir")
                        .arg(&r)
                        .args(["attach", &ns_path(&ns), "--id", &id, "--network", "a"]),
                    None,
                )
                .ok();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let pid = sb.dns_pid().expect("daemon running");
    let daemons: Vec<u32> = sb
        .pids()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("dns\0serve"))
        })
        .collect();
    assert_eq!(daemons, vec![pid], "{}", sb.dns_log());
    // They resolve each other.
    let p7_ns = sb.ps_row("p7")["netns"].as_str().unwrap().to_string();
    assert_eq!(dig_a(&p7_ns, GW_A, "p0"), vec![s(sb.ip_of("p0"))]);

    // Detached: its own session, not the child of anything the test ran; in the sandbox's
    // namespace; stdin and stdout on /dev/null; none of the hook's fds (locks) inherited.
    let st = proc_status(pid);
    let ppid: u32 = status_field(&st, "PPid").parse().unwrap();
    assert_ne!(ppid, std::process::id());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let (pgrp, sid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(sid, nix::unistd::getsid(None).unwrap().as_raw() as u32);
    assert_eq!(pgrp, sid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link(format!("/proc/{}/ns/net", sb.pids()[0])).unwrap()
    );
    for (fd, want) in [(0, "/dev/null"), (1, "/dev/null")] {
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .unwrap()
                .to_string_lossy(),
            want
        );
    }
    let fds: Vec<String> = list_dir(std::path::Path::new(&format!("/proc/{pid}/fd")))
        .into_iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(!fds.iter().any(|f| f.contains("/locks/")), "{fds:?}");
    // No capability in effect; permitted and in the bounding set only the three an
    // in-container listener needs (SYS_PTRACE 19, SYS_ADMIN 21, NET_BIND_SERVICE 10), raised
    // only while one is made; none to get back by exec.
    let kept = format!("{:016x}", (1u64 << 19) | (1 << 21) | (1 << 10));
    for (key, want) in [
        ("CapInh", "0000000000000000"),
        ("CapEff", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("CapPrm", kept.as_str()),
        ("CapBnd", kept.as_str()),
    ] {
        assert_eq!(status_field(&st, key), want, "{key}");
    }
    assert_eq!(status_field(&st, "NoNewPrivs"), "1");

    // A reload signal does not end it; status and doctor show it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sb.dns_pid(), Some(pid));
    let st = sb.nethook(&["dns", "status"]).ok();
    assert_eq!(
        st.stdout.trim(),
        format!("running pid {pid} port 15353, listeners: 1 on gateways, 0 in containers")
    );
    let doctor = sb.nethook(&["doctor"]);
    assert!(
        doctor
            .stdout
            .lines()
            .any(|l| l.contains("dns") && l.contains(&format!("pid {pid}"))),
        "{}",
        doctor.stdout
    );

    // The last DNS endpoint goes: the daemon within 2 s, and nothing of it is left.
    for n in 0..8 {
        sb.nethook(&["detach", &format!("p{n}")]).ok();
    }
    let t = Instant::now();
    let gone = time_until(Duration::from_secs(5), || exited(pid));
    eprintln!("timing dns: daemon exited {gone:?} after the last detach returned");
    assert!(
        gone.is_some_and(|d| d <= Duration::from_secs(2)),
        "{gone:?} {:?}",
        t.elapsed()
    );
    assert_eq!(sb.dns_pid(), None);
    assert_eq!(
        sb.nethook(&["dns", "status"]).ok().stdout.trim(),
        "not running"
    );
    assert_eq!(
        sb.pids(),
        Vec::<u32>::new(),
        "processes left in the sandbox"
    );
    sb.nethook(&["detach", "o"]).ok();

    // And a new one starts for the next container.
    let (x, x_ip) = attach(&sb, "x", &["--network", "a"]);
    assert_eq!(dig_a(&x, GW_A, "x"), vec![s(x_ip)]);
    let again = sb.dns_pid().expect("a new daemon");
    assert_ne!(again, pid);
    sb.nethook(&["detach", "x"]).ok();
}

#[test]
fn resolv_conf_and_busybox_nslookup_in_runc_containers() {
    if !can_run(
        "resolv_conf_and_busybox_nslookup_in_runc_containers",
        RUNC_TOOLS,
    ) {
        return;
    }
    let sb = Sandbox::new("dnsrunc");
    let peer = sb.add_peer();
    let _up = FakeUpstream::start(&peer.path(), &[("outside.example", OUTSIDE)]);
    networks(&sb, Some(peer.ip));
    let mut b1 = sb.bundle("c1", "sleep 60");
    b1.annotate("nethook.network", "a")
        .annotate("nethook.aliases", "db,cache");
    let c1 = sb.runc_start(&b1);
    let mut b2 = sb.bundle("c2", "sleep 60");
    b2.annotate("nethook.network", "a");
    let c2 = sb.runc_start(&b2);
    let mut b3 = sb.bundle("c3", "sleep 60");
    b3.annotate("nethook.network", "b");
    let c3 = sb.runc_start(&b3);
    let ip1 = sb.ip_of(&c1.id);

    let resolv = sb.runc_exec(&c2, "cat /etc/resolv.conf").ok();
    assert!(
        resolv
            .stdout
            .lines()
            .any(|l| l == format!("nameserver {GW_A}")),
        "{}",
        resolv.stdout
    );
    assert_eq!(
        resolv
            .stdout
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .count(),
        1,
        "{}",
        resolv.stdout
    );
    for name in [
        c1.id.clone(),
        "db".into(),
        "cache".into(),
        format!("{}.a", c1.id),
    ] {
        let r = sb.runc_exec(&c2, &format!("nslookup {name}"));
        assert!(
            r.code == 0 && r.stdout.contains(&ip1.to_string()),
            "nslookup {name} in c2: {r:?}\n{}",
            sb.dns_log()
        );
    }
    let r = sb.runc_exec(&c2, "nslookup outside.example").ok();
    assert!(r.stdout.contains(&OUTSIDE.to_string()), "{r:?}");
    let r = sb.runc_exec(&c2, &format!("nslookup {ip1}")).ok();
    assert!(r.stdout.contains(&c1.id), "{r:?}");
    // Another network: not found.
    let r = sb.runc_exec(&c3, &format!("nslookup {}", c1.id));
    assert!(!r.stdout.contains(&ip1.to_string()), "{r:?}");

    // c1 stops: gone for c2 at once.
    sb.runc_stop(&c1.id).ok();
    let r = sb.runc_exec(&c2, "nslookup db");
    assert!(!r.stdout.contains(&ip1.to_string()), "{r:?}");
    let pid = sb.dns_pid().expect("daemon");
    sb.runc_stop(&c2.id).ok();
    sb.runc_stop(&c3.id).ok();
    let gone = time_until(Duration::from_secs(4), || exited(pid));
    assert!(gone.is_some(), "daemon still running");
    sb.assert_no_endpoints();
}

#[test]
fn dns_upstream_option_is_checked() {
    if !can_run("dns_upstream_option_is_checked", &[]) {
        return;
    }
    let sb = Sandbox::new("dnsopt");
    sb.nethook(&[
        "network",
        "create",
        "u",
        "--subnet",
        "10.91.5.0/24",
        "--dns-upstream",
        "192.0.2.53",
    ])
    .ok();
    let v: serde_json::Value = serde_json::from_str(
        &sb.nethook(&["--format", "json", "network", "inspect", "u"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(v[0]["dns_upstreams"], serde_json::json!(["192.0.2.53"]));
    for (bad, needle) in [
        ("not-an-ip", "not an IPv4 address"),
        ("10.91.6.1", "own gateway"),
        ("224.0.0.1", "not a unicast address"),
    ] {
        sb.nethook(&[
            "network",
            "create",
            "v",
            "--subnet",
            "10.91.6.0/24",
            "--dns-upstream",
            bad,
        ])
        .refused(&[bad, needle]);
    }
    let four: Vec<&str> = ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"]
        .iter()
        .flat_map(|u| ["--dns-upstream", *u])
        .collect();
    let mut args = vec!["network", "create", "v", "--subnet", "10.91.6.0/24"];
    args.extend(four);
    sb.nethook(&args).refused(&["at most 3"]);
}

#[test]
fn crun_run_in_the_foreground_is_not_held_by_the_daemon() {
    let mut tools = RUNC_TOOLS.to_vec();
    tools.push("crun");
    if !can_run(
        "crun_run_in_the_foreground_is_not_held_by_the_daemon",
        &tools,
    ) {
        return;
    }
    // `crun run` is a child subreaper and waits until no descendant is left, and runs poststop
    // only after that: the daemon its hook started hands over once that container is gone, and
    // the poststop starts the next one for the containers still there.
    const WRAPPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/crun-wrapper");
    let sb = Sandbox::new("dnscrun");
    networks(&sb, None);
    let mut long = sb.bundle("long", "sleep 60");
    long.annotate("nethook.network", "a");
    let mut short = sb.bundle("short", "");
    short.config["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        format!(
            "for i in $(seq 1 100); do nslookup {} && exit 0; sleep 0.1; done; exit 1",
            long.id
        )
    ]);
    short.annotate("nethook.network", "a");
    short.write();
    let bundle = short.dir.to_string_lossy().into_owned();
    let mut c = sb.cmd(WRAPPER);
    c.arg("--root")
        .arg(sb.dir.join("crun-root"))
        .args(["run", "--bundle", &bundle, &short.id]);
    let crun = std::thread::spawn(move || {
        let t = Instant::now();
        let r = run_timeout(&mut c, None, Duration::from_secs(30));
        (r, t.elapsed())
    });
    // The daemon is born under crun run; the long-lived runc container is served by it.
    assert!(wait_until(Duration::from_secs(10), || sb
        .dns_pid()
        .is_some()));
    let first = sb.dns_pid().unwrap();
    let ppid = status_field(&proc_status(first), "PPid");
    let l = sb.runc_start(&long);
    let (r, took) = crun.join().unwrap();
    eprintln!("timing dns: crun run returned {took:?} after its start (daemon adopted by {ppid})");
    assert_eq!(r.code, 0, "{r:?}\n{}", sb.dns_log());
    assert!(r.stdout.contains(&sb.ip_of(&l.id).to_string()), "{r:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    // DNS goes on for the container still running, from a new daemon.
    let second = sb.dns_pid().expect("poststop started a daemon");
    assert_ne!(second, first, "{}", sb.dns_log());
    let r = sb.runc_exec(&l, &format!("nslookup {}", l.id));
    assert!(
        r.stdout.contains(&sb.ip_of(&l.id).to_string()),
        "{r:?}\n{}",
        sb.dns_log()
    );
    sb.runc_stop(&l.id).ok();
    assert!(time_until(Duration::from_secs(4), || exited(second)).is_some());
    sb.assert_no_endpoints();
}

/// The first IPv6 address `ps` gives endpoint `id` ("fd00:60::5/64" there), without its prefix.
fn ip6_of(sb: &Sandbox, id: &str) -> std::net::Ipv6Addr {
    let row = sb.ps_row(id);
    let v6 = row["ipv6"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no ipv6 for {id} in ps: {row}"));
    v6.split('/').next().unwrap().parse().unwrap()
}

#[test]
fn aaaa_and_ip6_ptr_for_dual_stack_runc_containers() {
    let tools: Vec<&str> = RUNC_TOOLS.iter().copied().chain(["dig"]).collect();
    if !can_run("aaaa_and_ip6_ptr_for_dual_stack_runc_containers", &tools) {
        return;
    }
    let sb = Sandbox::new("dnsv6");
    let peer = sb.add_peer();
    let up = FakeUpstream::start(&peer.path(), &[]);
    let gw_ds = Ipv4Addr::new(10, 90, 60, 1);
    let upstream = s(peer.ip);
    sb.nethook(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.90.60.0/24",
        "--subnet",
        "fd00:60::/64",
        "--dns-upstream",
        &upstream,
    ])
    .ok();
    sb.nethook(&[
        "network",
        "create",
        "a",
        "--subnet",
        "10.91.1.0/24",
        "--dns-upstream",
        &upstream,
    ])
    .ok();
    let mut b1 = sb.bundle("c1", "sleep 60");
    b1.annotate("nethook.network", "ds")
        .annotate("nethook.aliases", "six");
    let c1 = sb.runc_start(&b1);
    let mut b2 = sb.bundle("c2", "sleep 60");
    b2.annotate("nethook.network", "ds");
    let c2 = sb.runc_start(&b2);
    let mut b3 = sb.bundle("c3", "sleep 60");
    b3.annotate("nethook.network", "a");
    let c3 = sb.runc_start(&b3);
    let v6 = ip6_of(&sb, &c1.id);
    assert!(v6.to_string().starts_with("fd00:60::"), "{v6}");
    let v4 = sb.ip_of(&c1.id);
    assert!(sb.ps_row(&c3.id)["ipv6"]
        .as_array()
        .is_none_or(|a| a.is_empty()));

    // From c2's namespace at the (IPv4) gateway: AAAA by name, alias and NAME.NETWORK.
    for name in [c1.id.clone(), "six".into(), format!("{}.ds", c1.id)] {
        let r = dig_in(&c2.netns(), gw_ds, &[&name, "AAAA"]).unwrap();
        assert_eq!(
            (r.rcode.as_str(), r.data.clone()),
            ("NOERROR", vec![v6.to_string()]),
            "AAAA {name}\n{}",
            sb.dns_log()
        );
    }
    // A still answers IPv4 only.
    assert_eq!(dig_a(&c2.netns(), gw_ds, &c1.id), vec![s(v4)]);
    // PTR of the IPv6 address (ip6.arpa) and of the IPv4 one.
    for addr in [v6.to_string(), s(v4)] {
        let r = dig_in(&c2.netns(), gw_ds, &["-x", &addr]).unwrap();
        assert_eq!(
            (r.rcode.as_str(), r.data.clone()),
            ("NOERROR", vec![format!("{}.", b1.hostname())]),
            "-x {addr}"
        );
    }

    // A container of a v4-only network: AAAA of its name is NODATA (NOERROR, no answers),
    // answered here and not forwarded.
    for name in [c3.id.clone(), format!("{}.a", c3.id)] {
        let r = dig_in(&c3.netns(), GW_A, &[&name, "AAAA"]).unwrap();
        assert_eq!(
            (r.rcode.as_str(), r.data.len()),
            ("NOERROR", 0),
            "AAAA {name}: {r:?}"
        );
    }
    assert!(
        !up.asked().iter().any(|q| q.starts_with(&c3.id)),
        "{:?}",
        up.asked()
    );
    // ds's names are not a's to see, in either family.
    assert!(dig_in(&c3.netns(), GW_A, &[&c1.id, "AAAA"])
        .unwrap()
        .data
        .is_empty());

    // busybox nslookup inside the container, through its resolv.conf.
    let r = sb.runc_exec(&c2, &format!("nslookup -type=aaaa {}", c1.id));
    assert!(
        r.code == 0 && r.stdout.contains(&v6.to_string()),
        "nslookup -type=aaaa in c2: {r:?}\n{}",
        sb.dns_log()
    );
    let r = sb.runc_exec(&c2, &format!("nslookup {v6}"));
    assert!(r.stdout.contains(&c1.id), "nslookup {v6}: {r:?}");
    let r = sb.runc_exec(&c3, &format!("nslookup -type=aaaa {}", c3.id));
    assert!(
        !r.stdout.contains("NXDOMAIN") && !r.stderr.contains("NXDOMAIN"),
        "{r:?}"
    );

    for c in [&c1, &c2, &c3] {
        sb.runc_stop(&c.id).ok();
    }
    sb.assert_no_endpoints();
}
