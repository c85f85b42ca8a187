//! End to end under podman (Debian's 4.3.1): `podman run --rootfs DIR --network=none` inside a
//! sandbox netns, with nethook registered through podman's hooks.d files, the ones shipped in
//! hooks/ (rendered with the test binary's path and the sandbox's dirs). podman puts the
//! createRuntime hook into config.json for the runtime (runc here), and runs poststop itself,
//! from `podman container cleanup`, which conmon starts after the container exits: teardown is
//! asynchronous, so the tests poll. Everything podman keeps (storage, run root, runc's state,
//! cgroups) is in temp dirs or a cgroup of the test's own, removed at drop; podman itself
//! always creates an empty /run/containers/networks, which is not removed.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

const HOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks");

const PODMAN_TOOLS: &[&str] = &["podman", "conmon", "runc", "busybox", "socat", "nft", "ss"];

/// A busybox rootfs at `dir` (applets as relative links), with a page for httpd.
fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copying /bin/busybox");
    let list = run(Command::new("/bin/busybox").arg("--list"), None).ok();
    for applet in list
        .stdout
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "hello-from-podman\n").unwrap();
}

/// The soft=hard limits podman must be given here: without CAP_SYS_RESOURCE its defaults
/// (nofile 1048576, nproc pid_max) fail in runc init, and any --ulimit drops all defaults.
fn ulimits() -> [String; 2] {
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    let nofile = nofile.rlim_max.min(1 << 20);
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    [
        format!("nofile={nofile}:{nofile}"),
        format!("nproc={pid_max}:{pid_max}"),
    ]
}

/// podman with everything in `dir`, run inside the sandbox; removes its containers, their
/// processes, mounts and cgroups at drop (before the sandbox goes, as it is declared after it).
struct Podman<'a> {
    sb: &'a Sandbox,
    dir: PathBuf,
    /// A cgroup of this test's own (`--cgroup-parent`): conmon and the containers go under it.
    cgroup: String,
    names: Mutex<Vec<String>>,
}

impl<'a> Podman<'a> {
    fn new(sb: &'a Sandbox) -> Podman<'a> {
        let dir = sb.dir.join("podman");
        let hooks = dir.join("hooks.d");
        std::fs::create_dir_all(&hooks).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        // Backstop for --network=none: never podman's own bridge.
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\nnetns = \"none\"\n",
        )
        .unwrap();
        // The shipped hooks.d files, as installed, but running the test's binary in the
        // sandbox's dirs. Everything else (stages, when, env, timeout) is what users get.
        let mut shipped = 0;
        for f in list_dir(Path::new(HOOKS)) {
            let text = std::fs::read_to_string(Path::new(HOOKS).join(&f)).unwrap();
            let mut h: Value = serde_json::from_str(&text).unwrap();
            if h["version"] != "1.0.0" {
                continue; // the runc/crun config.json snippet
            }
            assert_eq!(h["hook"]["path"], "/usr/local/bin/nethook", "{f}");
            h["hook"]["path"] = json!(BIN);
            let args = h["hook"]["args"].as_array_mut().expect("hook.args");
            let dirs = [
                json!("--config-dir"),
                json!(sb.config_dir),
                json!("--run-dir"),
                json!(sb.run_dir),
            ];
            for (i, a) in dirs.into_iter().enumerate() {
                args.insert(1 + i, a);
            }
            std::fs::write(hooks.join(&f), serde_json::to_vec_pretty(&h).unwrap()).unwrap();
            shipped += 1;
        }
        assert_eq!(
            shipped, 2,
            "hooks/ should ship a createRuntime and a poststop file"
        );
        Podman {
            sb,
            cgroup: format!("/{}", unique("pd")),
            dir,
            names: Mutex::new(Vec::new()),
        }
    }

    /// `podman GLOBAL-FLAGS ARGS` inside the sandbox, everything kept in the temp dir.
    fn cmd(&self, args: &[&str]) -> Command {
        let d = |s: &str| self.dir.join(s);
        let mut c = self.sb.cmd("podman");
        c.env("CONTAINERS_CONF", d("containers.conf"))
            .arg("--root")
            .arg(d("root"))
            .arg("--runroot")
            .arg(d("runroot"))
            .arg("--tmpdir")
            .arg(d("tmp"))
            .arg("--network-config-dir")
            .arg(d("networks"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(["--runtime", "runc"])
            .arg("--runtime-flag")
            .arg(format!("root={}", d("runc-root").display()))
            .arg("--hooks-dir")
            .arg(d("hooks.d"))
            .args(args);
        c
    }

    fn podman(&self, args: &[&str]) -> Run {
        run_timeout(&mut self.cmd(args), None, Duration::from_secs(60))
    }

    /// `podman run [-d] --name NAME --network=none OPTS --rootfs ROOTFS CMD...`, with a fresh
    /// busybox rootfs of its own. Returns podman's result.
    fn run(&self, name: &str, detach: bool, opts: &[&str], cmd: &[&str]) -> Run {
        let rootfs = self.dir.join(format!("rootfs-{name}"));
        busybox_rootfs(&rootfs);
        self.names.lock().unwrap().push(name.to_string());
        let [nofile, nproc] = ulimits();
        let rootfs = rootfs.to_string_lossy().into_owned();
        let mut args = vec!["run"];
        if detach {
            args.push("-d");
        }
        args.extend([
            "--name",
            name,
            "--network=none",
            "--cgroup-parent",
            &self.cgroup,
            "--ulimit",
            &nofile,
            "--ulimit",
            &nproc,
        ]);
        args.extend(opts);
        args.extend(["--rootfs", &rootfs]);
        args.extend(cmd);
        self.podman(&args)
    }

    fn exec(&self, name: &str, args: &[&str]) -> Run {
        let mut a = vec!["exec", name];
        a.extend(args);
        self.podman(&a)
    }

    /// `podman inspect --format TEMPLATE NAME`, trimmed.
    fn inspect(&self, name: &str, template: &str) -> String {
        self.podman(&["inspect", "--format", template, name])
            .ok()
            .stdout
            .trim()
            .to_string()
    }

    /// Processes podman started for this test (conmon, `podman container cleanup`): they name
    /// the temp dir on their command line.
    fn processes(&self) -> Vec<i32> {
        let needle = self.dir.to_string_lossy().into_owned();
        let me = std::process::id() as i32;
        list_dir(Path::new("/proc"))
            .into_iter()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|&p| p != me)
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            })
            .collect()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let names: Vec<String> = self.names.get_mut().map(std::mem::take).unwrap_or_default();
        for n in &names {
            let _ = run(&mut self.cmd(&["rm", "-f", "-t", "0", n]), None);
        }
        // conmon and the cleanup processes (which run poststop) end on their own; wait, then
        // end what is left by pid.
        if !wait_until(Duration::from_secs(10), || self.processes().is_empty()) {
            for p in self.processes() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Containers podman lost track of: runc still has them in its state dir.
        let runc = |args: &[&str]| {
            let mut c = Command::new("runc");
            c.arg("--root").arg(self.dir.join("runc-root")).args(args);
            run(&mut c, None)
        };
        for id in runc(&["list", "-q"]).stdout.split_whitespace() {
            let _ = runc(&["kill", id, "KILL"]);
            let _ = runc(&["delete", "-f", id]);
        }
        // Mounts podman left under the temp dir (shm, the rootfs), deepest first.
        let prefix = self.dir.to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = run(Command::new("umount").args(["-l", &m]), None);
        }
        // The test's cgroup in every hierarchy: the containers' and conmon's below it, then it.
        for h in list_dir(Path::new("/sys/fs/cgroup")) {
            let top = Path::new("/sys/fs/cgroup")
                .join(&h)
                .join(self.cgroup.trim_start_matches('/'));
            if !top.is_dir() {
                continue;
            }
            for sub in list_dir(&top) {
                let _ = std::fs::remove_dir(top.join(sub));
            }
            let _ = std::fs::remove_dir(&top);
        }
    }
}

/// `busybox wget -q -O- URL` from `netns`, bounded by busybox timeout (its -T segfaults here).
fn http_get_from(netns: &str, url: &str) -> Option<String> {
    let r = run(
        Sandbox::cmd_in(netns, "busybox")
            .args(["timeout", "5", "busybox", "wget", "-q", "-O-", url]),
        None,
    );
    (r.code == 0).then_some(r.stdout)
}

/// True when some /etc/hosts line maps `ip` to `name`.
fn hosts_maps(hosts: &str, ip: Ipv4Addr, name: &str) -> bool {
    hosts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next() == Some(&ip.to_string()) && f.any(|n| n == name)
    })
}

/// True when map pub4 of table inet nethook forwards host port `port`.
fn pub4_has_port(sb: &Sandbox, port: u16) -> bool {
    let r = sb.sh(&["nft", "list", "map", "inet", "nethook", "pub4"]);
    r.code == 0 && r.stdout.contains(&format!(" . {port} : "))
}

#[test]
fn published_port_serves_and_podman_stop_tears_everything_down() {
    if !can_run("podman_publish", PODMAN_TOOLS) {
        return;
    }
    let sb = Sandbox::new("pdpub");
    // The peer gives the sandbox an address of its own (192.0.2.1), as a host has.
    let peer = sb.add_peer();
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.7.0/24"])
        .ok();
    let pd = Podman::new(&sb);
    let name = unique("web");
    let r = pd
        .run(
            &name,
            true,
            &[
                "--annotation",
                "nethook.network=web",
                "--annotation",
                "nethook.publish=8080:80",
            ],
            &["httpd", "-f", "-p", "80", "-h", "/www"],
        )
        .ok();
    let id = r.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "podman run -d printed {:?}", r.stdout);
    assert_eq!(pd.inspect(&name, "{{.State.Status}}"), "running");

    // nethook attached it to web, with the port published.
    let row = sb.ps_row(&id);
    assert_eq!(row["state"], "ready");
    assert_eq!(row["network"], "web");
    let ip = sb.ip_of(&id);
    assert!(in_subnet(ip, "10.90.7.0/24"), "{ip}");
    let host_if = row["host_interface"].as_str().unwrap().to_string();
    let ports = sb.nethook(&["--format", "json", "port", "ls", &id]).ok();
    let ports: Value = serde_json::from_str(&ports.stdout).unwrap();
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "{ports}");
    assert_eq!(ports[0]["host_port"], 8080);
    assert_eq!(ports[0]["container_port"], 80);

    // Served through the published port: from the sandbox to its own address, and from the
    // peer ("another host") to the sandbox's address.
    let url = format!("http://{}:8080/", peer.sandbox_ip);
    let mut got = None;
    wait_until(Duration::from_secs(10), || {
        got = http_get_from(&sb.path(), &url);
        got.is_some()
    });
    assert_eq!(
        got.as_deref().map(str::trim),
        Some("hello-from-podman"),
        "{url} from the sandbox"
    );
    assert_eq!(
        http_get_from(&peer.path(), &url).as_deref().map(str::trim),
        Some("hello-from-podman"),
        "{url} from the peer"
    );

    // The container's own view: eth0 with nethook's address; /etc/hosts, /etc/hostname and
    // /etc/resolv.conf, as the container sees them (podman bind-mounts its own hosts and
    // hostname: nethook wrote those bind sources).
    let hostname = pd.inspect(&name, "{{.Config.Hostname}}");
    assert!(!hostname.is_empty());
    let addr = pd
        .exec(&name, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        .ok();
    assert!(
        addr.stdout.contains(&format!("inet {ip}/24 ")),
        "eth0 in the container: {}",
        addr.stdout
    );
    let mounts = pd.exec(&name, &["cat", "/proc/mounts"]).ok().stdout;
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some("/etc/hosts")),
        "podman no longer bind-mounts /etc/hosts: {mounts}"
    );
    let hosts = pd.exec(&name, &["cat", "/etc/hosts"]).ok().stdout;
    assert!(
        hosts_maps(&hosts, ip, &hostname),
        "the container's /etc/hosts does not map {ip} to {hostname}:\n{hosts}"
    );
    assert!(
        hosts_maps(&hosts, Ipv4Addr::LOCALHOST, "localhost"),
        "{hosts}"
    );
    assert_eq!(
        pd.exec(&name, &["cat", "/etc/hostname"]).ok().stdout.trim(),
        hostname
    );
    let resolv = pd.exec(&name, &["cat", "/etc/resolv.conf"]).ok().stdout;
    let ns: Vec<Ipv4Addr> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(|n| n.trim().parse().expect("nameserver address"))
        .collect();
    assert!(!ns.is_empty(), "no nameserver in resolv.conf:\n{resolv}");
    assert!(
        ns.iter().all(|a| !a.is_loopback()),
        "resolv.conf points at loopback: {resolv}"
    );
    for (f, text) in [("/etc/hosts", &hosts), ("/etc/resolv.conf", &resolv)] {
        assert!(
            text.starts_with("# written by nethook"),
            "{f} in the container is not nethook's:\n{text}"
        );
    }
    assert!(pub4_has_port(&sb, 8080), "pub4 does not forward 8080");
    assert!(sb.masq4_has(ip), "masq4 has no element {ip}");

    // `podman stop`: poststop runs from conmon's cleanup, after podman returns. Poll.
    pd.podman(&["stop", "-t", "0", &name]).ok();
    assert!(
        wait_until(Duration::from_secs(15), || sb.endpoint_files().is_empty()),
        "the endpoint of {id} is still recorded 15 s after podman stop: {:?}",
        sb.endpoint_files()
    );
    sb.assert_gone(&id, ip, &host_if);
    sb.assert_no_endpoints();
    assert!(
        wait_until(Duration::from_secs(5), || !pub4_has_port(&sb, 8080)),
        "pub4 still forwards 8080"
    );
    assert_eq!(http_get_from(&sb.path(), &url), None, "{url} still answers");
    assert_eq!(pd.inspect(&name, "{{.State.Status}}"), "exited");
    // `podman rm` runs no second poststop, and there is nothing left for one anyway.
    pd.podman(&["rm", &name]).ok();
    sb.assert_no_endpoints();
}

#[test]
fn container_without_the_annotation_is_left_alone() {
    if !can_run("podman_no_annotation", PODMAN_TOOLS) {
        return;
    }
    let sb = Sandbox::new("pdoff");
    let pd = Podman::new(&sb);
    let name = unique("plain");
    let r = pd
        .run(
            &name,
            false,
            &["--annotation", "other.network=web"],
            &[
                "sh",
                "-c",
                "ip -o link; cat /etc/resolv.conf 2>&1; echo end",
            ],
        )
        .ok();
    assert!(r.stdout.contains("end"), "{}", r.stdout);
    // Only lo: the hooks did not run, so nethook made nothing anywhere.
    let links: Vec<&str> = r.stdout.lines().filter(|l| l.contains(": <")).collect();
    assert_eq!(links.len(), 1, "links in the container: {links:?}");
    assert!(links[0].contains(": lo:"), "{links:?}");
    assert!(!r.stdout.contains("written by nethook"), "{}", r.stdout);
    assert_eq!(
        list_dir(&sb.config_dir.join("networks")),
        Vec::<String>::new()
    );
    assert_eq!(sb.endpoint_files(), Vec::<String>::new());
    assert_eq!(
        sb.link_names().into_iter().collect::<Vec<_>>(),
        vec!["lo".to_string()]
    );
    pd.podman(&["rm", &name]).ok();
}
