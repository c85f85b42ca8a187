//! Hostile and broken input on every surface (issue 7): state JSON, config.json, annotations,
//! publish specs, hand-edited network files and CLI arguments. Each is refused with exit 1 and
//! one `nethook: ...` line (never a panic, never a stack overflow), and nothing is applied. Names
//! full of shell metacharacters prove there is no shell anywhere: the file they would create
//! never appears.

mod common;

use common::*;
use std::path::PathBuf;

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
    fn hook_raw(&self, stdin: &[u8]) -> Run {
        self.sb.nethook_stdin(&["hook", "createRuntime"], stdin)
    }

    fn hook(&self, id: &str, annotations: &[(&str, &str)]) -> (Run, PathBuf) {
        let bundle = hand_bundle(&self.sb, "h", annotations);
        let state = create_state(id, Some(self.pid), &bundle);
        (self.hook_raw(state.as_bytes()), bundle)
    }

    #[track_caller]
    fn assert_untouched(&self) {
        self.sb.assert_no_endpoints();
        let links = Sandbox::link_names_in(&format!("/proc/{}/ns/net", self.pid));
        assert_eq!(
            links.into_iter().collect::<Vec<_>>(),
            vec!["lo".to_string()]
        );
    }
}

/// A file a shell would have created from one of the hostile names.
fn canary(sb: &Sandbox) -> PathBuf {
    sb.dir.join("pwned")
}

#[test]
fn deep_nesting_non_utf8_and_nul_in_the_state_are_refused() {
    let Some(c) = case("hostile_state") else {
        return;
    };
    let bundle = hand_bundle(&c.sb, "h", &[]);
    // 100,000 levels of nesting: serde_json's recursion limit refuses it, no stack overflow.
    let deep = format!(
        "{{\"ociVersion\":\"1.0.2\",\"id\":\"x\",\"status\":\"creating\",\"pid\":{},\"bundle\":{:?},\"annotations\":{{\"a\":{}{}}}}}",
        c.pid,
        bundle.display().to_string(),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    c.hook_raw(deep.as_bytes()).refused(&["OCI state"]);
    // Not UTF-8.
    let mut bad = create_state("x", Some(c.pid), &bundle).into_bytes();
    let at = bad.iter().position(|b| *b == b'x').unwrap();
    bad[at] = 0xff;
    c.hook_raw(&bad).refused(&["OCI state"]);
    // A NUL byte in the id (JSON-escaped) and a raw one in the document.
    let nul = create_state("a\u{0}b", Some(c.pid), &bundle);
    c.hook_raw(nul.as_bytes()).refused(&["container id"]);
    let mut raw = create_state("ab", Some(c.pid), &bundle).into_bytes();
    raw.insert(raw.len() / 2, 0);
    c.hook_raw(&raw).refused(&["OCI state"]);
    c.assert_untouched();
}

#[test]
fn broken_config_json_is_refused() {
    let Some(c) = case("hostile_config") else {
        return;
    };
    for (what, text) in [
        ("not JSON", b"{\"ociVersion\": ".to_vec()),
        ("not UTF-8", vec![b'{', 0xff, b'}']),
        (
            "deep",
            format!(
                "{{\"annotations\":{{\"a\":{}{}}}}}",
                "[".repeat(50_000),
                "]".repeat(50_000)
            )
            .into_bytes(),
        ),
        (
            "wrong types",
            b"{\"hostname\": 7, \"annotations\": []}".to_vec(),
        ),
    ] {
        let bundle = hand_bundle(&c.sb, "h", &[]);
        std::fs::write(bundle.join("config.json"), &text).unwrap();
        let state = create_state("cfg", Some(c.pid), &bundle);
        let r = c.hook_raw(state.as_bytes());
        r.refused(&["config.json"]);
        assert!(!bundle.join("rootfs/etc").exists(), "{what}: files written");
    }
    c.assert_untouched();
}

#[test]
fn shell_metacharacters_never_reach_a_shell() {
    let Some(c) = case("hostile_shell") else {
        return;
    };
    let canary = canary(&c.sb);
    let evil = format!("a;touch {}", canary.display());
    let evil2 = format!("$(touch {})", canary.display());
    let evil3 = format!("`touch {}`", canary.display());
    for e in [&evil, &evil2, &evil3] {
        // As a container id, a network name, a hostname, an alias, a publish spec.
        let (r, _) = c.hook(e, &[]);
        r.refused(&["container id"]);
        c.hook("ok1", &[("nethook.network", e)])
            .0
            .refused(&["network name"]);
        c.hook("ok2", &[("nethook.aliases", e)])
            .0
            .refused(&["alias"]);
        c.hook("ok3", &[("nethook.publish", e)])
            .0
            .refused(&["publish"]);
        c.sb.nethook(&["network", "create", e, "--subnet", "10.90.99.0/24"])
            .refused(&["network name"]);
        c.sb.nethook(&[
            "network",
            "create",
            "n",
            "--subnet",
            "10.90.99.0/24",
            "--bridge",
            e,
        ])
        .refused(&["interface name"]);
    }
    let bundle = hand_bundle(&c.sb, "h", &[]);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    cfg["hostname"] = serde_json::json!(evil);
    std::fs::write(bundle.join("config.json"), cfg.to_string()).unwrap();
    c.hook_raw(create_state("host1", Some(c.pid), &bundle).as_bytes())
        .refused(&["hostname"]);
    assert!(!canary.exists(), "a shell ran one of the names");
    c.assert_untouched();
}

#[test]
fn integer_overflow_in_ports_prefixes_and_mtus_is_refused() {
    let Some(c) = case("hostile_ints") else {
        return;
    };
    for spec in [
        "99999999999999999999:80",
        "8080:70000",
        "65536:80",
        "0-65536:80",
        "8080-8079:80",
        "18446744073709551617:1",
        "-1:80",
    ] {
        c.hook("p", &[("nethook.publish", spec)])
            .0
            .refused(&["publish"]);
    }
    for (k, v) in [
        ("nethook.mtu", "4294967296"),
        ("nethook.mtu", "-1"),
        ("nethook.bandwidth.egress", "99999999999999999999999tbit"),
    ] {
        c.hook("m", &[(k, v)]).0.refused(&[k]);
    }
    for subnet in [
        "10.0.0.0/33",
        "10.0.0.0/4294967297",
        "fd00::/129",
        "10.0.0.0/-1",
    ] {
        c.sb.nethook(&["network", "create", "ov", "--subnet", subnet])
            .refused(&["subnet"]);
    }
    // A CLI number that does not fit is a usage error (exit 2) with one line, not a panic.
    let r = c.sb.nethook(&[
        "network",
        "create",
        "ov",
        "--subnet",
        "10.90.98.0/24",
        "--mtu",
        "99999999999",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    c.assert_untouched();
}

#[test]
fn hand_edited_network_files_are_refused_by_name() {
    let Some(c) = case("hostile_netfile") else {
        return;
    };
    c.sb.nethook(&["network", "create", "web", "--subnet", "10.90.97.0/24"])
        .ok();
    let file = c.sb.config_dir.join("networks/web.json");
    let good = std::fs::read_to_string(&file).unwrap();
    for (what, text) in [
        ("garbage", "{{{".to_string()),
        ("empty", String::new()),
        ("no subnets", good.replace("\"subnets\"", "\"nosubnets\"")),
        (
            "subnet not a CIDR",
            good.replace("10.90.97.0/24", "10.90.97.0/99"),
        ),
        ("unknown driver", good.replace("\"bridge\",", "\"ipvlan\",")),
        (
            "bad bridge name",
            good.replace("nh-web", "a-name-far-too-long-for-linux"),
        ),
    ] {
        std::fs::write(&file, &text).unwrap();
        let needle = file.display().to_string();
        c.sb.nethook(&["network", "inspect", "web"])
            .refused(&[&needle]);
        c.sb.nethook(&["network", "ls"]).refused(&[&needle]);
        let (r, _) = c.hook("nf", &[("nethook.network", "web")]);
        r.refused(&[&needle]);
        c.assert_untouched();
        let _ = what;
    }
    std::fs::write(&file, &good).unwrap();
    let (r, _) = c.hook("nf", &[("nethook.network", "web")]);
    r.ok();
}
