//! Bad input gets a clear error and changes nothing (issue 2): each case exits 1 with one line
//! `nethook: ...` on stderr naming the problem, writes nothing on stdout, and leaves no endpoint
//! record, lease, veth, container interface or rootfs file behind. The hook is driven by hand:
//! state JSON on stdin, a bundle whose config.json the test writes, and a real pid from
//! `unshare -n sleep 60` standing in for the container's init.

mod common;

use common::*;
use std::net::Ipv4Addr;

const STAGE: &str = "createRuntime";

/// A sandbox plus one stand-in container (its pid and bundle).
struct Case {
    sb: Sandbox,
    pid: u32,
}

fn case(test: &str) -> Option<Case> {
    if !can_run(test, &[]) {
        return None;
    }
    let sb = Sandbox::new(test);
    let pid = sb.spawn_unshared_sleep();
    Some(Case { sb, pid })
}

impl Case {
    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// Run the createRuntime hook for container `id` with `annotations` and hook `args`.
    fn hook(
        &self,
        id: &str,
        annotations: &[(&str, &str)],
        args: &[&str],
    ) -> (Run, std::path::PathBuf) {
        let bundle = hand_bundle(&self.sb, "b", annotations);
        let state = create_state(id, Some(self.pid), &bundle);
        let mut a = vec!["hook", STAGE];
        a.extend_from_slice(args);
        (self.sb.nethook_stdin(&a, state.as_bytes()), bundle)
    }

    /// Nothing left: no record, lease or veth; the container netns has only lo; no /etc written.
    #[track_caller]
    fn assert_untouched(&self, bundle: Option<&std::path::Path>) {
        self.sb.assert_no_endpoints();
        let links = Sandbox::link_names_in(&self.netns());
        assert_eq!(
            links.into_iter().collect::<Vec<_>>(),
            vec!["lo".to_string()],
            "the container netns got an interface"
        );
        if let Some(b) = bundle {
            assert!(
                !b.join("rootfs/etc").exists(),
                "files were written into the rootfs"
            );
        }
    }
}

#[test]
fn empty_or_malformed_state_is_refused() {
    let Some(c) = case("badstate") else { return };
    for (input, needle) in [
        ("", "empty"),
        ("   \n", "empty"),
        ("{", "state"),
        ("[]", "state"),
        ("null", "state"),
        ("{\"id\": 42}", "state"),
        ("not json at all", "state"),
    ] {
        let r = c.sb.nethook_stdin(&["hook", STAGE], input.as_bytes());
        r.refused(&["OCI state", needle]);
    }
    // Also at poststop: a state it cannot parse is an error, not a silent success.
    c.sb.nethook_stdin(&["hook", "poststop"], b"{")
        .refused(&["OCI state"]);
    c.assert_untouched(None);
}

#[test]
fn oversized_state_is_refused() {
    let Some(c) = case("bigstate") else { return };
    let bundle = hand_bundle(&c.sb, "b", &[]);
    let mut state = create_state("big", Some(c.pid), &bundle).into_bytes();
    // Valid JSON padded with whitespace past 1 MiB.
    state.extend(std::iter::repeat_n(b' ', (1 << 20) + 16));
    let r = c.sb.nethook_stdin(&["hook", STAGE], &state);
    r.refused(&["1 MiB"]);
    c.assert_untouched(Some(&bundle));
}

#[test]
fn bad_container_id_is_refused_before_any_file() {
    let Some(c) = case("badid") else { return };
    for id in ["../../escape", "a/b", "-x", ".hidden"] {
        let (r, bundle) = c.hook(id, &[], &[]);
        r.refused(&["container id"]);
        c.assert_untouched(Some(&bundle));
    }
    // Nothing named after the bad ids anywhere in the temp dir (outside the run dir either).
    assert!(!c.sb.dir.join("escape.json").exists());
    assert!(!c.sb.run_dir.join("escape.json").exists());
}

#[test]
fn state_without_pid_is_refused() {
    let Some(c) = case("nopid") else { return };
    let bundle = hand_bundle(&c.sb, "b", &[]);
    let state = create_state("nopid", None, &bundle);
    let r = c.sb.nethook_stdin(&["hook", STAGE], state.as_bytes());
    r.refused(&["container nopid", "pid"]);
    c.assert_untouched(Some(&bundle));
}

#[test]
fn pid_that_has_exited_is_refused() {
    let Some(c) = case("deadpid") else { return };
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{dead}")).exists());
    let bundle = hand_bundle(&c.sb, "b", &[]);
    let state = create_state("deadpid", Some(dead), &bundle);
    let r = c.sb.nethook_stdin(&["hook", STAGE], state.as_bytes());
    r.refused(&["container deadpid", &dead.to_string()]);
    c.assert_untouched(Some(&bundle));
}

#[test]
fn bundle_without_config_json_is_refused() {
    let Some(c) = case("nocfg") else { return };
    let bundle = c.sb.dir.join("empty-bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let state = create_state("nocfg", Some(c.pid), &bundle);
    let r = c.sb.nethook_stdin(&["hook", STAGE], state.as_bytes());
    r.refused(&["container nocfg", "config.json"]);
    c.assert_untouched(None);
    // A config.json that is not JSON is named as such.
    std::fs::write(bundle.join("config.json"), "{ nope").unwrap();
    let r = c.sb.nethook_stdin(&["hook", STAGE], state.as_bytes());
    r.refused(&["config.json", "JSON"]);
    c.assert_untouched(None);
}

#[test]
fn unknown_network_is_refused() {
    let Some(c) = case("nonet") else { return };
    let (r, b) = c.hook("nonet1", &[("nethook.network", "nope")], &[]);
    r.refused(&["container nonet1", "network nope", "does not exist"]);
    c.assert_untouched(Some(&b));
    let (r, b) = c.hook("nonet2", &[], &["--network", "nope"]);
    r.refused(&["container nonet2", "network nope", "does not exist"]);
    c.assert_untouched(Some(&b));
    // And by hand.
    c.sb.nethook(&["attach", &c.netns(), "--network", "nope", "--id", "nonet3"])
        .refused(&["network nope", "does not exist"]);
    c.assert_untouched(None);
    // Nothing was created for it.
    assert!(!c.sb.config_dir.join("networks/nope.json").exists());
}

#[test]
fn invalid_cidr_is_refused() {
    let Some(c) = case("badcidr") else { return };
    for (subnet, needle) in [
        ("bogus", "bogus"),
        ("10.90.3.0", "10.90.3.0"),
        ("10.90.3.0/33", "10.90.3.0/33"),
        ("300.1.1.0/24", "300.1.1.0/24"),
        ("10.90.3.1/24", "host bits"),
    ] {
        c.sb.nethook(&["network", "create", "web", "--subnet", subnet])
            .refused(&["subnet", needle]);
    }
    c.sb.nethook(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.90.3.0/24",
        "--gateway",
        "10.90.4.1",
    ])
    .refused(&["gateway 10.90.4.1"]);
    assert_eq!(
        list_dir(&c.sb.config_dir.join("networks")),
        Vec::<String>::new()
    );
    let ls = c.sb.nethook(&["--format", "json", "network", "ls"]).ok();
    let v: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
}

#[test]
fn invalid_ip_or_mac_is_refused() {
    let Some(c) = case("badaddr") else { return };
    c.sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    for ip in ["10.90.3", "10.90.3.256", "fe80::1", "x"] {
        let (r, b) = c.hook(
            "badip",
            &[("nethook.network", "web"), ("nethook.ip", ip)],
            &[],
        );
        r.refused(&["container badip", "static address", ip]);
        c.assert_untouched(Some(&b));
    }
    for mac in [
        "zz:42:ac:11:00:02",
        "02:42:ac:11:00",
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
    ] {
        let (r, b) = c.hook(
            "badmac",
            &[("nethook.network", "web"), ("nethook.mac", mac)],
            &[],
        );
        r.refused(&["container badmac", "MAC address", mac]);
        c.assert_untouched(Some(&b));
    }
    // Hook args and attach flags are checked the same way.
    let (r, b) = c.hook("badip2", &[], &["--network", "web", "--ip", "10.90.3"]);
    r.refused(&["static address"]);
    c.assert_untouched(Some(&b));
    c.sb.nethook(&[
        "attach",
        &c.netns(),
        "--network",
        "web",
        "--id",
        "x",
        "--mac",
        "nope",
    ])
    .refused(&["MAC address"]);
    c.sb.nethook(&[
        "attach",
        &c.netns(),
        "--network",
        "web",
        "--id",
        "x",
        "--ip",
        "1.2.3",
    ])
    .refused(&["static address"]);
    c.assert_untouched(None);
}

#[test]
fn static_ip_outside_the_subnet_is_refused() {
    let Some(c) = case("outside") else { return };
    c.sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    for ip in ["10.99.0.5", "10.90.3.0", "10.90.3.255", "10.90.3.1"] {
        let (r, b) = c.hook(
            "outside",
            &[("nethook.network", "web"), ("nethook.ip", ip)],
            &[],
        );
        r.refused(&["container outside", &format!("static address {ip}")]);
        c.assert_untouched(Some(&b));
    }
    // A network the container is not on.
    let (r, b) = c.hook(
        "outside2",
        &[
            ("nethook.network", "web"),
            ("nethook.ip", "other=10.90.3.9"),
        ],
        &[],
    );
    r.refused(&["container outside2", "other"]);
    c.assert_untouched(Some(&b));
}

#[test]
fn static_ip_taken_is_refused_and_the_holder_keeps_it() {
    let Some(c) = case("taken") else { return };
    c.sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    let ann = [("nethook.network", "web"), ("nethook.ip", "10.90.3.50")];
    let (first, b1) = c.hook("holder", &ann, &[]);
    let first = first.ok();
    assert_eq!(first.stdout, "", "the hook prints nothing on stdout");
    let ip: Ipv4Addr = "10.90.3.50".parse().unwrap();
    assert_eq!(
        Sandbox::addrs4_in(&c.netns()),
        vec![("eth0".to_string(), "10.90.3.50/24".to_string())]
    );
    assert!(b1.join("rootfs/etc/hosts").exists());
    let veths = c.sb.veths();
    assert_eq!(veths.len(), 1);

    // A second container asking for the same address.
    let pid2 = c.sb.spawn_unshared_sleep();
    let b2 = hand_bundle(&c.sb, "b2", &ann);
    let state = create_state("second", Some(pid2), &b2);
    let r = c.sb.nethook_stdin(&["hook", STAGE], state.as_bytes());
    r.refused(&["container second", "10.90.3.50", "taken by holder"]);
    assert_eq!(
        Sandbox::link_names_in(&format!("/proc/{pid2}/ns/net"))
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["lo".to_string()]
    );
    assert!(!b2.join("rootfs/etc").exists());
    assert_eq!(c.sb.endpoint_files(), vec!["holder.json".to_string()]);
    assert_eq!(c.sb.lease_files(), vec!["web/10.90.3.50".to_string()]);
    assert_eq!(c.sb.lease_holder("web", ip).as_deref(), Some("holder"));
    assert_eq!(c.sb.veths(), veths);

    // The runtime runs poststop for the failed container: it must not release the holder's.
    let post = serde_json::json!({"ociVersion": "1.0.2-dev", "id": "second", "status": "stopped",
                                  "bundle": b2})
    .to_string();
    let r =
        c.sb.nethook_stdin(&["hook", "poststop"], post.as_bytes())
            .ok();
    assert_eq!(r.stdout, "");
    assert_eq!(c.sb.lease_holder("web", ip).as_deref(), Some("holder"));
    assert_eq!(c.sb.endpoint_files(), vec!["holder.json".to_string()]);
    assert_eq!(c.sb.veths(), veths);

    // The holder ends; its poststop clears it all.
    c.sb.kill(c.pid);
    let post = serde_json::json!({"ociVersion": "1.0.2-dev", "id": "holder", "status": "stopped",
                                  "bundle": b1})
    .to_string();
    c.sb.nethook_stdin(&["hook", "poststop"], post.as_bytes())
        .ok();
    c.sb.assert_no_endpoints();
}

#[test]
fn exhausted_subnet_is_refused() {
    let Some(c) = case("full") else { return };
    // A /30: the gateway takes .1, one container fits (.2).
    c.sb.nethook(&["network", "create", "tiny", "--subnet", "10.90.9.0/30"])
        .ok();
    let (first, _) = c.hook("fits", &[("nethook.network", "tiny")], &[]);
    first.ok();
    assert_eq!(
        Sandbox::addrs4_in(&c.netns()),
        vec![("eth0".to_string(), "10.90.9.2/30".to_string())]
    );
    let pid2 = c.sb.spawn_unshared_sleep();
    let b2 = hand_bundle(&c.sb, "b2", &[("nethook.network", "tiny")]);
    let state = create_state("overflow", Some(pid2), &b2);
    let r = c.sb.nethook_stdin(&["hook", STAGE], state.as_bytes());
    r.refused(&["container overflow", "network tiny", "no free address"]);
    assert_eq!(
        Sandbox::link_names_in(&format!("/proc/{pid2}/ns/net"))
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["lo".to_string()]
    );
    assert!(!b2.join("rootfs/etc").exists());
    assert_eq!(c.sb.endpoint_files(), vec!["fits.json".to_string()]);
    assert_eq!(c.sb.lease_files(), vec!["tiny/10.90.9.2".to_string()]);
    assert_eq!(c.sb.veths().len(), 1);
    // Room again once the first one goes.
    c.sb.nethook(&["detach", "fits"]).ok();
    c.sb.nethook_stdin(&["hook", STAGE], state.as_bytes()).ok();
    assert_eq!(
        Sandbox::addrs4_in(&format!("/proc/{pid2}/ns/net")),
        vec![("eth0".to_string(), "10.90.9.2/30".to_string())]
    );
    c.sb.nethook(&["detach", "overflow"]).ok();
    c.sb.assert_no_endpoints();
}

#[test]
fn interface_name_over_15_bytes_is_refused() {
    let Some(c) = case("longif") else { return };
    c.sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    let long = "abcdefghijklmnop"; // 16 bytes
    c.sb.nethook(&[
        "attach",
        &c.netns(),
        "--network",
        "web",
        "--id",
        "longif",
        "--ifname",
        long,
    ])
    .refused(&["interface name", long, "15"]);
    c.assert_untouched(None);
    // 15 bytes is fine.
    let ok = "abcdefghijklmno";
    c.sb.nethook(&[
        "attach",
        &c.netns(),
        "--network",
        "web",
        "--id",
        "longif",
        "--ifname",
        ok,
    ])
    .ok();
    assert!(Sandbox::link_names_in(&c.netns()).contains(ok));
    c.sb.nethook(&["detach", "longif"]).ok();
    c.assert_untouched(None);
}

#[test]
fn network_name_with_slash_or_dotdot_is_refused() {
    let Some(c) = case("badname") else { return };
    for name in ["../etc", "a/b", "..", ".", "/abs"] {
        let (r, b) = c.hook("badname", &[("nethook.network", name)], &[]);
        r.refused(&["container badname", "network name"]);
        c.assert_untouched(Some(&b));
        let (r, b) = c.hook("badname", &[], &["--network", name]);
        r.refused(&["network name"]);
        c.assert_untouched(Some(&b));
        c.sb.nethook(&["attach", &c.netns(), "--network", name, "--id", "badname"])
            .refused(&["network name"]);
        c.sb.nethook(&["network", "create", name, "--subnet", "10.90.3.0/24"])
            .refused(&["network name"]);
        c.assert_untouched(None);
    }
    // Nothing was written outside (or inside) the config dir for any of them.
    assert_eq!(
        list_dir(&c.sb.config_dir.join("networks")),
        Vec::<String>::new()
    );
    assert!(!c.sb.config_dir.join("etc.json").exists());
    assert!(!c.sb.dir.join("etc.json").exists());
    assert!(!c.sb.config_dir.join("networks/a").exists());
}

#[test]
fn rootfs_symlinks_never_make_nethook_write_outside_the_rootfs() {
    let Some(c) = case("symlink") else { return };
    let outside = c.sb.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("hosts"), "host file\n").unwrap();
    // rootfs/etc -> an absolute host path; rootfs/etc inside it -> links climbing out.
    let b1 = hand_bundle(&c.sb, "abs", &[]);
    std::os::unix::fs::symlink(&outside, b1.join("rootfs/etc")).unwrap();
    let b2 = hand_bundle(&c.sb, "rel", &[]);
    std::fs::create_dir_all(b2.join("rootfs/etc")).unwrap();
    let climb = format!(
        "../../../../../../../../..{}",
        outside.join("hosts").display()
    );
    std::os::unix::fs::symlink(&climb, b2.join("rootfs/etc/hosts")).unwrap();
    std::os::unix::fs::symlink(
        format!(
            "../../../../../../../../..{}",
            outside.join("hostname").display()
        ),
        b2.join("rootfs/etc/hostname"),
    )
    .unwrap();
    for (id, b) in [("symabs", &b1), ("symrel", &b2)] {
        let state = create_state(id, Some(c.pid), b);
        let r = c.sb.nethook_stdin(&["hook", STAGE], state.as_bytes());
        assert_eq!(
            std::fs::read_to_string(outside.join("hosts")).unwrap(),
            "host file\n",
            "{id}: nethook wrote through a rootfs symlink to the host"
        );
        assert_eq!(list_dir(&outside), vec!["hosts".to_string()], "{id}");
        if r.code == 0 {
            // Written, but inside the rootfs.
            c.sb.nethook(&["detach", id]).ok();
        } else {
            r.refused(&[&format!("container {id}")]);
        }
        c.sb.assert_no_endpoints();
    }
}
