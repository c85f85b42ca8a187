//! IPv6 through nethook's table, for real: three network namespaces (a "host" with a bridge,
//! a "container" on it, a "peer" outside), the table installed in the host one through the
//! library, and socat clients and servers. Needs root; skips otherwise. Never touches the
//! root namespace's firewall or links.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nethook::firewall::{Change, Firewall, Forward4, Forward6, L4};
use nethook::netns::Netns;

const H6: &str = "2001:db8:6::1"; // host, towards the peer
const P6: &str = "2001:db8:6::2"; // peer
const GW6: &str = "fd00:91::1"; // host, on the bridge
const C6: &str = "fd00:91::2"; // container
const H4: &str = "192.0.2.1";
const C4: &str = "10.91.0.2";
const BRIDGE: &str = "br6";

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three namespaces, removed (with the servers in them) on drop.
struct Lab {
    tag: String,
    servers: Vec<Child>,
}

impl Lab {
    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.tag)
    }

    fn ip(&self, n: &str, args: &[&str]) {
        let ns = self.ns(n);
        let mut v = vec!["ip", "-n", &ns];
        v.extend_from_slice(args);
        sh(&v);
    }

    fn exec(&self, n: &str, args: &[&str]) -> std::process::Output {
        let ns = self.ns(n);
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn new() -> Lab {
        let tag = format!("fw6t{}", std::process::id());
        let lab = Lab {
            tag,
            servers: Vec::new(),
        };
        for n in ["h", "c", "p"] {
            sh(&["ip", "netns", "add", &lab.ns(n)]);
            lab.ip(n, &["link", "set", "lo", "up"]);
        }
        let (c, p) = (lab.ns("c"), lab.ns("p"));
        // Host: a bridge with the container's veth, and a veth to the peer.
        lab.ip("h", &["link", "add", BRIDGE, "type", "bridge"]);
        lab.ip(
            "h",
            &[
                "link", "add", "hc", "type", "veth", "peer", "name", "eth0", "netns", &c,
            ],
        );
        lab.ip("h", &["link", "set", "hc", "master", BRIDGE]);
        lab.ip(
            "h",
            &[
                "link", "add", "hp", "type", "veth", "peer", "name", "eth0", "netns", &p,
            ],
        );
        for (dev, a6, a4) in [
            (BRIDGE, "fd00:91::1/64", "10.91.0.1/24"),
            ("hp", "2001:db8:6::1/64", "192.0.2.1/24"),
        ] {
            lab.ip("h", &["-6", "addr", "add", a6, "dev", dev, "nodad"]);
            lab.ip("h", &["addr", "add", a4, "dev", dev]);
        }
        for dev in [BRIDGE, "hc", "hp"] {
            lab.ip("h", &["link", "set", dev, "up"]);
        }
        for (n, a6, a4, gw6, gw4) in [
            ("c", "fd00:91::2/64", "10.91.0.2/24", GW6, "10.91.0.1"),
            ("p", "2001:db8:6::2/64", "192.0.2.2/24", "", ""),
        ] {
            lab.ip(n, &["-6", "addr", "add", a6, "dev", "eth0", "nodad"]);
            lab.ip(n, &["addr", "add", a4, "dev", "eth0"]);
            lab.ip(n, &["link", "set", "eth0", "up"]);
            if !gw6.is_empty() {
                lab.ip(n, &["-6", "route", "add", "default", "via", gw6]);
                lab.ip(n, &["route", "add", "default", "via", gw4]);
            }
        }
        // The peer has no route to the container's subnets: it only answers the host.
        for (k, v) in [
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.ip_forward", "1"),
        ] {
            let o = lab.exec("h", &["sysctl", "-qw", &format!("{k}={v}")]);
            assert!(o.status.success());
        }
        lab
    }

    /// A TCP server on both families that answers "NAME PEER_ADDRESS".
    fn serve(&mut self, n: &str, name: &str, port: u16) {
        let ns = self.ns(n);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "socat"])
            .arg(format!("TCP6-LISTEN:{port},ipv6only=0,reuseaddr,fork"))
            .arg(format!("SYSTEM:echo {name} $SOCAT_PEERADDR"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
        // Until it listens.
        let t = Instant::now();
        while !String::from_utf8_lossy(&self.exec(n, &["ss", "-Htln"]).stdout)
            .contains(&format!(":{port} "))
        {
            assert!(t.elapsed() < Duration::from_secs(5), "server {name} not up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What a TCP client in `n` gets from `addr:port` ("NAME PEER", the peer as an address),
    /// None if it does not connect.
    fn ask(&self, n: &str, addr: &str, port: u16) -> Option<(String, IpAddr)> {
        let target = match addr.parse::<IpAddr>().unwrap() {
            IpAddr::V6(a) => format!("TCP6:[{a}]:{port},connect-timeout=1"),
            IpAddr::V4(a) => format!("TCP4:{a}:{port},connect-timeout=1"),
        };
        let o = self.exec(n, &["socat", "-T2", "-", &target]);
        let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let (name, peer) = text.split_once(' ')?;
        let peer: Ipv6Addr = peer.trim_matches(['[', ']']).parse().ok()?;
        let peer = peer
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(peer));
        Some((name.to_string(), peer))
    }

    fn firewall<T>(&self, f: impl FnOnce(&mut Firewall) -> T) -> T {
        let home = Netns::current().unwrap();
        let ns = Netns::open(&PathBuf::from(format!("/run/netns/{}", self.ns("h")))).unwrap();
        let mut out = None;
        ns.run_in(&home, || {
            let mut fw = Firewall::open()?;
            out = Some(f(&mut fw));
            Ok(())
        })
        .unwrap();
        out.unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["h", "c", "p"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ipv6_publish_masquerade_and_expiry() {
    if !is_root() {
        eprintln!("ipv6_publish_masquerade_and_expiry: skipped, needs root");
        return;
    }
    let mut lab = Lab::new();
    let f6 = Forward6 {
        proto: L4::Tcp,
        host_ip: None,
        host_port: 8080,
        ip: v6(C6),
        port: 80,
    };
    let f6_ip = Forward6 {
        host_ip: Some(v6(H6)),
        host_port: 8081,
        ..f6
    };
    let f4 = Forward4 {
        proto: L4::Tcp,
        host_ip: None,
        host_port: 8080,
        ip: C4.parse().unwrap(),
        port: 80,
    };
    lab.firewall(|fw| {
        assert!(fw.ensure_base().unwrap());
        fw.apply(&[
            Change::AddBridge(BRIDGE.into()),
            Change::AddIntra {
                bridge: BRIDGE.into(),
                icc: true,
            },
            Change::AddNet4("10.91.0.0/24".parse().unwrap()),
            Change::AddNet6("fd00:91::/64".parse().unwrap()),
            Change::AddMasq4(C4.parse().unwrap()),
            Change::AddMasq6(v6(C6)),
            Change::AddForward4(f4),
            Change::AddForward6(f6),
            Change::AddForward6(f6_ip),
        ])
        .unwrap();
    });
    let text = String::from_utf8_lossy(
        &lab.exec("h", &["nft", "list", "table", "inet", "nethook"])
            .stdout,
    )
    .into_owned();
    for want in [
        "comment \"nethook layout 5\"",
        "set nets6 {",
        "elements = { fd00:91::/64 }",
        "set masq6 {",
        "elements = { fd00:91::2 }",
        "map pub6 {",
        "tcp . 8080 : fd00:91::2 . 80",
        "map pub6_ip {",
        "tcp . 2001:db8:6::1 . 8081 : fd00:91::2 . 80",
        "set hairpin6 {",
        "icmpv6 type nd-neighbor-solicit accept",
    ] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }

    lab.serve("c", "c", 80);
    lab.serve("p", "peer", 80);
    lab.serve("h", "host", 2222);

    // Neighbour discovery and ping to the gateway pass the input chain.
    let o = lab.exec("c", &["busybox", "ping", "-c1", "-W2", GW6]);
    assert!(o.status.success(), "ping {GW6}: {o:?}");
    // Other host services stay closed to the bridge, in both families.
    assert_eq!(lab.ask("c", GW6, 2222), None);
    assert_eq!(lab.ask("c", "10.91.0.1", 2222), None);
    assert_eq!(lab.ask("p", H6, 2222), Some(("host".into(), ip(P6))));

    // A v6 published port from outside: the client's address kept.
    assert_eq!(lab.ask("p", H6, 8080), Some(("c".into(), ip(P6))));
    // The v4 forward of the same host port reaches the container's v4 address.
    assert_eq!(lab.ask("p", H4, 8080), Some(("c".into(), ip("192.0.2.2"))));
    // pub6_ip: only on its address.
    assert_eq!(lab.ask("p", H6, 8081), Some(("c".into(), ip(P6))));
    // From the host itself (output chain), via its own addresses.
    assert_eq!(lab.ask("h", H6, 8080), Some(("c".into(), ip(H6))));
    assert_eq!(lab.ask("h", GW6, 8080), Some(("c".into(), ip(GW6))));
    assert_eq!(lab.ask("h", GW6, 8081), None);
    // The container to its own published port: hairpin6 masquerades it to the gateway (the
    // bridge port needs hairpin mode for that, as nethook sets it).
    lab.ip(
        "h",
        &[
            "link",
            "set",
            "dev",
            "hc",
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ],
    );
    assert_eq!(lab.ask("c", H6, 8080), Some(("c".into(), ip(GW6))));

    // masquerade6: the peer sees the host's address.
    assert_eq!(lab.ask("c", P6, 80), Some(("peer".into(), ip(H6))));
    assert_eq!(lab.ask("c", "192.0.2.2", 80), Some(("peer".into(), ip(H4))));

    // ExpireForward6: new connections stop within a jiffy; the v4 forward stays.
    let t = Instant::now();
    lab.firewall(|fw| {
        fw.apply(&[Change::ExpireForward6(f6), Change::ExpireMasq6(v6(C6))])
            .unwrap()
    });
    while lab.ask("p", H6, 8080).is_some() {
        assert!(t.elapsed() < Duration::from_secs(2), "forward still works");
    }
    eprintln!("expired v6 forward stopped within {:?}", t.elapsed());
    assert_eq!(lab.ask("p", H4, 8080), Some(("c".into(), ip("192.0.2.2"))));
    assert_eq!(lab.ask("p", H6, 8081), Some(("c".into(), ip(P6))));
    // Without masq6 the peer, with no route back to fd00:91::/64, cannot answer.
    assert_eq!(lab.ask("c", P6, 80), None);
    let snap = lab.firewall(|fw| fw.snapshot().unwrap().unwrap());
    // f6_ip shared its hairpin6 element with f6 (one container port), which went with f6, so
    // check leaves f6_ip out too (as with v4; detach expires a container's forwards together).
    assert!(snap.forwards6.is_empty());
    assert!(snap.masq6.is_empty());
    assert_eq!(snap.nets6, vec!["fd00:91::/64".parse().unwrap()]);
}
