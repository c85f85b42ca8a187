//! nethook as a CNI plugin (issue 10), driven the way `cnitool` drives a conflist: each
//! plugin run with `CNI_*` in its environment and its config (name, cniVersion, runtimeConfig of
//! its capabilities, prevResult) on stdin, against namespaces the sandbox makes.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::process::Command;

const TOOLS: &[&str] = &["socat", "ss"];
const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// A conflist and the runtime's side of running it, like cnitool.
struct Cni<'a> {
    sb: &'a Sandbox,
    list: Value,
}

impl<'a> Cni<'a> {
    /// A conflist named `name` of `plugins`; nethook's entries get the sandbox's dirs.
    fn new(sb: &'a Sandbox, name: &str, version: &str, plugins: Vec<Value>) -> Cni<'a> {
        let plugins: Vec<Value> = plugins
            .into_iter()
            .map(|mut p| {
                if p["type"] == "nethook" {
                    p["configDir"] = json!(sb.config_dir);
                    p["runDir"] = json!(sb.run_dir);
                }
                p
            })
            .collect();
        Cni {
            sb,
            list: json!({"cniVersion": version, "name": name, "plugins": plugins}),
        }
    }

    /// Plugin `i`'s stdin: its entry with the list's name and version, the runtimeConfig keys
    /// it has capabilities for, and prevResult.
    fn conf(&self, i: usize, rc: &Value, prev: Option<&Value>) -> Value {
        let mut p = self.list["plugins"][i].clone();
        p["name"] = self.list["name"].clone();
        p["cniVersion"] = self.list["cniVersion"].clone();
        let caps = p.get("capabilities").cloned().unwrap_or(json!({}));
        let mut rtc = serde_json::Map::new();
        if let Some(m) = rc.as_object() {
            for (k, v) in m {
                if caps[k] == true {
                    rtc.insert(k.clone(), v.clone());
                }
            }
        }
        if !rtc.is_empty() {
            p["runtimeConfig"] = Value::Object(rtc);
        }
        if let Some(r) = prev {
            p["prevResult"] = r.clone();
        }
        p
    }

    fn plugins(&self) -> usize {
        self.list["plugins"].as_array().unwrap().len()
    }

    /// Run plugin `i` with `command`.
    fn exec(&self, i: usize, command: &str, env: &CniEnv, stdin: &Value) -> Run {
        let kind = self.list["plugins"][i]["type"]
            .as_str()
            .unwrap()
            .to_string();
        exec_plugin(self.sb, &kind, command, env, stdin)
    }

    /// ADD through the list, each plugin's result the next one's prevResult.
    fn add(&self, env: &CniEnv, rc: &Value) -> Result<Value, Run> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins() {
            let r = self.exec(i, "ADD", env, &self.conf(i, rc, prev.as_ref()));
            if r.code != 0 {
                return Err(r);
            }
            prev = Some(serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
                panic!("ADD result of plugin {i} is not JSON ({e}): {}", r.stdout)
            }));
        }
        Ok(prev.expect("a result"))
    }

    /// CHECK (in order) or DEL (in reverse), with the ADD result as prevResult.
    fn each(&self, command: &str, env: &CniEnv, rc: &Value, result: Option<&Value>) -> Run {
        let order: Vec<usize> = if command == "DEL" {
            (0..self.plugins()).rev().collect()
        } else {
            (0..self.plugins()).collect()
        };
        let mut last = None;
        for i in order {
            let r = self.exec(i, command, env, &self.conf(i, rc, result));
            if r.code != 0 {
                return r;
            }
            last = Some(r);
        }
        last.expect("a plugin")
    }

    fn gc(&self, valid: &[(&str, &str)]) -> Run {
        let mut conf = self.conf(0, &json!({}), None);
        conf["cni.dev/valid-attachments"] = json!(valid
            .iter()
            .map(|(c, i)| json!({"containerID": c, "ifname": i}))
            .collect::<Vec<_>>());
        exec_plugin(self.sb, "nethook", "GC", &CniEnv::default(), &conf)
    }
}

#[derive(Debug, Clone, Default)]
struct CniEnv {
    id: String,
    netns: Option<String>,
    ifname: String,
    args: Option<String>,
}

impl CniEnv {
    fn new(id: &str, netns: &str) -> CniEnv {
        CniEnv {
            id: id.into(),
            netns: Some(netns.into()),
            ifname: "eth0".into(),
            args: None,
        }
    }
}

fn exec_plugin(sb: &Sandbox, kind: &str, command: &str, env: &CniEnv, stdin: &Value) -> Run {
    let prog = if kind == "nethook" {
        BIN.to_string()
    } else {
        format!("{CNI_BIN_DIR}/{kind}")
    };
    let mut c: Command = sb.cmd(&prog);
    c.env("CNI_COMMAND", command)
        .env("CNI_PATH", CNI_BIN_DIR)
        .env_remove("NETHOOK_CONFIG_DIR")
        .env_remove("NETHOOK_RUN_DIR");
    if !env.id.is_empty() {
        c.env("CNI_CONTAINERID", &env.id);
    }
    if !env.ifname.is_empty() {
        c.env("CNI_IFNAME", &env.ifname);
    }
    if let Some(n) = &env.netns {
        c.env("CNI_NETNS", n);
    }
    if let Some(a) = &env.args {
        c.env("CNI_ARGS", a);
    }
    run(&mut c, Some(stdin.to_string().as_bytes()))
}

/// The error JSON of a failed run, checked for the spec's shape.
#[track_caller]
fn cni_error(r: &Run, version: &str) -> Value {
    assert_eq!(
        r.code, 1,
        "{}: expected exit 1: {} {}",
        r.what, r.stdout, r.stderr
    );
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("error output is not JSON ({e}): {}", r.stdout));
    assert_eq!(v["cniVersion"], version, "{v}");
    assert!(v["code"].is_u64(), "{v}");
    assert!(v["msg"].is_string(), "{v}");
    v
}

fn web(sb: &Sandbox, subnet: &str) {
    sb.nethook(&["network", "create", "web", "--subnet", subnet])
        .ok();
}

fn nethook_plugin(network: &str) -> Value {
    json!({"type": "nethook", "network": network,
           "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true}})
}

/// The container interface's address and its index in `interfaces`.
fn container_ip(result: &Value, ifname: &str) -> Ipv4Addr {
    let ifaces = result["interfaces"].as_array().expect("interfaces");
    let idx = ifaces
        .iter()
        .position(|i| i["name"] == ifname && i.get("sandbox").is_some())
        .unwrap_or_else(|| panic!("no sandbox interface {ifname}: {result}"));
    let ip = result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .find(|i| i["interface"] == idx && !i["address"].as_str().unwrap().contains(':'))
        .unwrap_or_else(|| panic!("no IPv4 address on {ifname}: {result}"));
    addr_of(ip["address"].as_str().unwrap())
}

#[test]
fn cni_add_reach_check_gc_del() {
    if !can_run("cni_add_reach_check_gc_del", TOOLS) {
        return;
    }
    let sb = Sandbox::new("cni");
    web(&sb, "10.90.21.0/24");
    let peer = sb.add_peer();
    let ns = sb.add_netns("c");
    let nsp = format!("/run/netns/{ns}");
    let cni = Cni::new(&sb, "webnet", "1.1.0", vec![nethook_plugin("web")]);
    let env = CniEnv::new("ctr-a", &nsp);
    let rc = json!({
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
        "aliases": {"webnet": ["api"]},
    });
    let res = cni.add(&env, &rc).unwrap_or_else(|r| panic!("ADD: {r:?}"));

    // The result: spec shape, version of the list.
    assert_eq!(res["cniVersion"], "1.1.0", "{res}");
    let ifaces = res["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 2, "{res}");
    assert!(ifaces[0].get("sandbox").is_none(), "{res}");
    assert_eq!(ifaces[1]["name"], "eth0");
    assert_eq!(ifaces[1]["sandbox"], nsp.as_str());
    for i in ifaces {
        assert!(i["mac"].as_str().is_some_and(|m| m.len() == 17), "{res}");
    }
    let ip = container_ip(&res, "eth0");
    assert!(in_subnet(ip, "10.90.21.0/24"), "{res}");
    assert_eq!(res["ips"][0]["gateway"], "10.90.21.1");
    assert!(
        res["ips"][0].get("version").is_none(),
        "1.x has no ips[].version"
    );
    assert_eq!(res["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(res["dns"]["nameservers"][0], "10.90.21.1");
    let host_if = ifaces[0]["name"].as_str().unwrap().to_string();
    assert!(sb.link_names().contains(&host_if));

    // The record says CNI made it, with its ifname.
    let rec: Value = serde_json::from_str(
        &std::fs::read_to_string(sb.run_dir.join("endpoints/ctr-a.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["source"], "cni");
    assert_eq!(rec["attachments"][0]["interface"], "eth0");
    assert_eq!(rec["aliases"][0], "api");

    // Reachable from the host, and through the published port from a peer.
    sb.serve_in(&nsp, 80, "hello-cni");
    assert_eq!(
        sb.tcp_get(ip, 80).as_deref().map(str::trim),
        Some("hello-cni")
    );
    let via_port = Sandbox::tcp_get_from(&peer.path(), peer.sandbox_ip, 18080);
    assert_eq!(via_port.as_deref().map(str::trim), Some("hello-cni"));

    // CHECK passes; then eth0 deleted by hand: CHECK fails with an error JSON naming it.
    cni.each("CHECK", &env, &rc, Some(&res)).ok();
    run(
        Command::new("ip").args(["-n", &ns, "link", "del", "eth0"]),
        None,
    )
    .ok();
    let r = cni.each("CHECK", &env, &rc, Some(&res));
    let e = cni_error(&r, "1.1.0");
    assert_eq!(e["code"], 102, "{e}");
    assert!(e["details"].as_str().unwrap().contains("eth0"), "{e}");

    // GC with a valid list that does not name it: released.
    cni.gc(&[("someone-else", "eth0")]).ok();
    sb.assert_gone("ctr-a", ip, &host_if);
    assert!(
        !sb.forward_in_nft("tcp", 18080) || {
            wait_until(std::time::Duration::from_secs(5), || {
                !sb.forward_in_nft("tcp", 18080)
            })
        }
    );

    // DEL twice, the second without a netns: both succeed, nothing on stdout.
    let r = cni.each("DEL", &env, &rc, Some(&res)).ok();
    assert_eq!(r.stdout, "");
    let no_ns = CniEnv {
        netns: None,
        ..env.clone()
    };
    cni.each("DEL", &no_ns, &rc, Some(&res)).ok();
    sb.assert_no_endpoints();
}

#[test]
fn cni_del_twice_second_network_and_inline_subnet() {
    if !can_run("cni_del_twice_second_network_and_inline_subnet", TOOLS) {
        return;
    }
    let sb = Sandbox::new("cni2");
    web(&sb, "10.90.22.0/24");
    let ns = sb.add_netns("c");
    let nsp = format!("/run/netns/{ns}");
    // Version 0.4.0: ips carry "version".
    let first = Cni::new(&sb, "webnet", "0.4.0", vec![nethook_plugin("web")]);
    let env = CniEnv {
        args: Some("IgnoreUnknown=1;IP=10.90.22.77;K8S_POD_NAME=web-0".into()),
        ..CniEnv::new("ctr-b", &nsp)
    };
    let res = first
        .add(&env, &json!({}))
        .unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(res["cniVersion"], "0.4.0");
    assert_eq!(res["ips"][0]["version"], "4", "{res}");
    assert_eq!(container_ip(&res, "eth0"), Ipv4Addr::new(10, 90, 22, 77));
    // The same ADD again gives the same result.
    let again = first
        .add(&env, &json!({}))
        .unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(again["ips"], res["ips"]);

    // A second network from inline settings, as eth1 of the same container.
    let inline = Cni::new(
        &sb,
        "side",
        "1.0.0",
        vec![json!({"type": "nethook", "subnet": "10.90.23.0/24", "mtu": 1400})],
    );
    let env1 = CniEnv {
        ifname: "eth1".into(),
        ..CniEnv::new("ctr-b", &nsp)
    };
    let res1 = inline
        .add(&env1, &json!({}))
        .unwrap_or_else(|r| panic!("{r:?}"));
    let ip1 = container_ip(&res1, "eth1");
    assert!(in_subnet(ip1, "10.90.23.0/24"), "{res1}");
    assert!(
        res1.get("routes").is_none(),
        "only the first network routes: {res1}"
    );
    assert!(sb.config_dir.join("networks/side.json").exists());
    let addrs = Sandbox::addrs4_in(&nsp);
    assert!(
        addrs.iter().any(|(i, a)| i == "eth1" && addr_of(a) == ip1),
        "{addrs:?}"
    );
    inline.each("CHECK", &env1, &json!({}), Some(&res1)).ok();

    // DEL of eth1 leaves eth0; DEL twice each; GC with both valid keeps everything.
    inline.gc(&[]).ok();
    inline.each("DEL", &env1, &json!({}), Some(&res1)).ok();
    inline.each("DEL", &env1, &json!({}), Some(&res1)).ok();
    assert!(!Sandbox::link_names_in(&nsp).contains("eth1"));
    assert_eq!(sb.ps().len(), 1);
    first.gc(&[("ctr-b", "eth0")]).ok();
    first.each("CHECK", &env, &json!({}), Some(&res)).ok();
    first.each("DEL", &env, &json!({}), Some(&res)).ok();
    first.each("DEL", &env, &json!({}), Some(&res)).ok();
    sb.assert_no_endpoints();
    assert!(!Sandbox::link_names_in(&nsp).contains("eth0"));
}

#[test]
fn cni_and_hook_refuse_each_others_containers() {
    if !can_run("cni_and_hook_refuse_each_others_containers", TOOLS) {
        return;
    }
    let sb = Sandbox::new("cnih");
    web(&sb, "10.90.24.0/24");
    let cni = Cni::new(&sb, "webnet", "1.1.0", vec![nethook_plugin("web")]);

    // The hook first: CNI ADD of the same id is refused, and CNI's DEL leaves it alone.
    let pid = sb.spawn_unshared_sleep();
    let bundle = hand_bundle(&sb, "b", &[("nethook.network", "web")]);
    let state = create_state("both", Some(pid), &bundle);
    sb.nethook_stdin(&["hook", "createRuntime"], state.as_bytes())
        .ok();
    let env = CniEnv::new("both", &format!("/proc/{pid}/ns/net"));
    let r = cni.each("ADD", &env, &json!({}), None);
    let e = cni_error(&r, "1.1.0");
    assert_eq!(e["code"], 101, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("OCI hook"), "{e}");
    assert!(e["details"].as_str().unwrap().contains("not both"), "{e}");
    cni.each("DEL", &env, &json!({}), None).ok();
    cni.gc(&[]).ok();
    assert_eq!(sb.ps().len(), 1, "the hook's endpoint stays");
    sb.nethook_stdin(&["hook", "poststop"], state.as_bytes())
        .ok();
    sb.kill(pid);

    // CNI first: the hook refuses, and its poststop leaves CNI's endpoint alone.
    let ns = sb.add_netns("c");
    let nsp = format!("/run/netns/{ns}");
    let env = CniEnv::new("both2", &nsp);
    let res = cni
        .add(&env, &json!({}))
        .unwrap_or_else(|r| panic!("{r:?}"));
    let pid = sb.spawn_unshared_sleep();
    let state = create_state("both2", Some(pid), &bundle);
    sb.nethook_stdin(&["hook", "createRuntime"], state.as_bytes())
        .refused(&["both2", "CNI", "not both"]);
    sb.nethook_stdin(&["hook", "poststop"], state.as_bytes())
        .ok();
    cni.each("CHECK", &env, &json!({}), Some(&res)).ok();
    cni.each("DEL", &env, &json!({}), Some(&res)).ok();
    sb.kill(pid);
    sb.assert_no_endpoints();
}

#[test]
fn cni_chained_with_reference_tuning() {
    if !can_run("cni_chained_with_reference_tuning", TOOLS) {
        return;
    }
    if !std::path::Path::new(CNI_BIN_DIR).join("tuning").exists() {
        eprintln!(
            "skipping cni_chained_with_reference_tuning: {CNI_BIN_DIR}/tuning is missing (apt-get install containernetworking-plugins)"
        );
        return;
    }
    let sb = Sandbox::new("cnit");
    web(&sb, "10.90.25.0/24");
    let ns = sb.add_netns("c");
    let nsp = format!("/run/netns/{ns}");
    let cni = Cni::new(
        &sb,
        "tuned",
        "1.0.0",
        vec![
            nethook_plugin("web"),
            json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}),
        ],
    );
    let env = CniEnv::new("ctr-t", &nsp);
    let res = cni
        .add(&env, &json!({}))
        .unwrap_or_else(|r| panic!("{r:?}"));
    // tuning passed nethook's result through.
    assert_eq!(res["cniVersion"], "1.0.0", "{res}");
    let ip = container_ip(&res, "eth0");
    assert!(in_subnet(ip, "10.90.25.0/24"));
    let somax = run(
        Sandbox::cmd_in(&nsp, "cat").arg("/proc/sys/net/core/somaxconn"),
        None,
    )
    .ok();
    assert_eq!(somax.stdout.trim(), "512");
    sb.serve_in(&nsp, 81, "tuned");
    assert_eq!(sb.tcp_get(ip, 81).as_deref().map(str::trim), Some("tuned"));
    cni.each("CHECK", &env, &json!({}), Some(&res)).ok();
    cni.each("DEL", &env, &json!({}), Some(&res)).ok();
    cni.each("DEL", &env, &json!({}), Some(&res)).ok();
    sb.assert_no_endpoints();

    // nethook after another plugin: a prevResult it did not make is kept, its own appended.
    let ns2 = sb.add_netns("c");
    let nsp2 = format!("/run/netns/{ns2}");
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "lo0", "sandbox": nsp2}],
        "ips": [{"address": "192.168.77.2/24", "interface": 0}],
        "dns": {"nameservers": ["192.168.77.1"]}});
    let one = Cni::new(&sb, "tuned", "1.0.0", vec![nethook_plugin("web")]);
    let r = one.exec(
        0,
        "ADD",
        &CniEnv::new("ctr-u", &nsp2),
        &one.conf(0, &json!({}), Some(&prev)),
    );
    let res2: Value = serde_json::from_str(&r.ok().stdout).unwrap();
    assert_eq!(res2["interfaces"][0]["name"], "lo0");
    assert_eq!(res2["ips"][0]["address"], "192.168.77.2/24");
    assert_eq!(res2["ips"][1]["interface"], 2, "{res2}");
    assert_eq!(res2["dns"]["nameservers"][0], "192.168.77.1");
    one.each("DEL", &CniEnv::new("ctr-u", &nsp2), &json!({}), None)
        .ok();
    sb.assert_no_endpoints();
}

#[test]
fn cni_version_status_and_errors() {
    if !can_run("cni_version_status_and_errors", TOOLS) {
        return;
    }
    let sb = Sandbox::new("cniv");
    let v = exec_plugin(
        &sb,
        "nethook",
        "VERSION",
        &CniEnv::default(),
        &json!({"cniVersion": "1.0.0"}),
    )
    .ok();
    let v: Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    let sv: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(sv.contains(&want), "{v}");
    }

    // STATUS: a missing network cannot ADD (50); an existing one can.
    let cni = Cni::new(&sb, "webnet", "1.1.0", vec![nethook_plugin("web")]);
    let st = cni.conf(0, &json!({}), None);
    let r = exec_plugin(&sb, "nethook", "STATUS", &CniEnv::default(), &st);
    assert_eq!(cni_error(&r, "1.1.0")["code"], 50);
    web(&sb, "10.90.26.0/24");
    let r = exec_plugin(&sb, "nethook", "STATUS", &CniEnv::default(), &st).ok();
    assert_eq!(r.stdout, "");
    // An unusable run dir: 50 too.
    let mut bad = st.clone();
    bad["runDir"] = json!("/proc/nethook-nope");
    let r = exec_plugin(&sb, "nethook", "STATUS", &CniEnv::default(), &bad);
    assert_eq!(cni_error(&r, "1.1.0")["code"], 50);

    // Errors: unknown version (1), missing env (4), bad JSON (6), unknown network (7),
    // CHECK of an unknown container (3).
    let ns = sb.add_netns("c");
    let env = CniEnv::new("ctr-e", &format!("/run/netns/{ns}"));
    let mut old = st.clone();
    old["cniVersion"] = json!("9.9.9");
    let r = exec_plugin(&sb, "nethook", "ADD", &env, &old);
    assert_eq!(cni_error(&r, "1.1.0")["code"], 1);
    let no_ns = CniEnv {
        netns: None,
        ..env.clone()
    };
    let r = exec_plugin(&sb, "nethook", "ADD", &no_ns, &st);
    assert_eq!(cni_error(&r, "1.1.0")["code"], 4);
    let mut c = sb.cmd(BIN);
    c.env("CNI_COMMAND", "ADD");
    let r = run(&mut c, Some(b"{not json"));
    assert_eq!(cni_error(&r, "1.1.0")["code"], 6);
    let mut other = st.clone();
    other["network"] = json!("nope");
    let r = exec_plugin(&sb, "nethook", "ADD", &env, &other);
    assert_eq!(cni_error(&r, "1.1.0")["code"], 7);
    let r = exec_plugin(&sb, "nethook", "CHECK", &env, &st);
    assert_eq!(cni_error(&r, "1.1.0")["code"], 3);
    sb.assert_no_endpoints();
}
