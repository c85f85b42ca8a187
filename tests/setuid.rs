//! Setuid mode (issue 7): a real unprivileged user, a setuid-root copy of nethook, and the user's
//! own rootless namespace (`unshare -Urn`). What the admin's users.conf grants works; every
//! attack of the issue is tried and refused with one line, exit 1 and nothing applied.
//!
//! The setuid copy lives in `SANDBOX/bin/` (root-owned, 0755) with a root-owned
//! `nethook-setuid-dirs` file next to it pointing at the sandbox's config and run dirs: debug
//! builds only read that file (see src/privilege.rs), a release build has only its compiled-in
//! dirs. Users are made with `useradd -M` and removed with `userdel -f` in a drop guard (after
//! the sandbox, declared later, has killed their processes); the binary copy goes with its
//! guard too.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const TOOLS: &[&str] = &["socat", "ss", "setpriv", "useradd", "userdel"];

/// useradd/userdel lock /etc/passwd: one at a time.
static USERDB: Mutex<()> = Mutex::new(());

/// A throwaway unprivileged user, deleted on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

fn id_of(flag: &str, name: &str) -> u32 {
    let r = run(Command::new("id").args([flag, name]), None).ok();
    r.stdout.trim().parse().expect("numeric id")
}

impl TestUser {
    fn new() -> TestUser {
        let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
        // Short and valid: [a-z][a-z0-9]*, unique per test process and call.
        let name = unique("u").replace("nht-u-", "nhtu").replace('-', "x");
        run(
            Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", &name]),
            None,
        )
        .ok();
        TestUser {
            uid: id_of("-u", &name),
            gid: id_of("-g", &name),
            name,
        }
    }

    /// `setpriv` as this user (no supplementary groups) running `prog`.
    fn cmd_in(&self, netns: &str, prog: &str) -> Command {
        let mut c = Sandbox::cmd_in(netns, "setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(prog);
        c
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..50 {
            let r = run(Command::new("userdel").args(["-f", &self.name]), None);
            if r.code == 0 || run(Command::new("id").arg(&self.name), None).code != 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not delete test user {}", self.name);
    }
}

/// The setuid-root copy of nethook, removed on drop.
struct SetuidBin {
    dir: PathBuf,
    path: String,
}

impl SetuidBin {
    fn install(sb: &Sandbox) -> SetuidBin {
        let dir = sb.dir.join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&sb.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("nethook");
        std::fs::copy(BIN, &path).unwrap();
        // We are root: the copy is root's; the setuid bit makes it run as root for anyone.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let dirs = dir.join("nethook-setuid-dirs");
        std::fs::write(
            &dirs,
            format!(
                "config={}\nrun={}\n",
                sb.config_dir.display(),
                sb.run_dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&dirs, std::fs::Permissions::from_mode(0o644)).unwrap();
        SetuidBin {
            path: path.display().to_string(),
            dir,
        }
    }
}

impl Drop for SetuidBin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The setuid nethook as `u`, inside the sandbox.
fn as_user(sb: &Sandbox, bin: &SetuidBin, u: &TestUser, args: &[&str]) -> Run {
    run(u.cmd_in(&sb.path(), &bin.path).args(args), None)
}

/// `unshare -Urn sleep 60` as `u`: the user's own user and network namespace (a rootless
/// container's). Returns the pid once it is in its namespace.
fn rootless_ns(sb: &Sandbox, u: &TestUser) -> u32 {
    let args = [
        "setpriv".to_string(),
        format!("--reuid={}", u.uid),
        format!("--regid={}", u.gid),
        "--clear-groups".into(),
        "unshare".into(),
        "-Urn".into(),
        "sleep".into(),
        "60".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = sb.spawn_in(&sb.path(), &args);
    let sbns = std::fs::read_link(sb.path()).ok();
    let ready = wait_until(Duration::from_secs(5), || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let uidmap = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
        comm.trim() == "sleep" && uidmap.split_whitespace().nth(1) == Some(&u.uid.to_string())
    });
    assert!(ready, "unshare -Urn sleep 60 as {} did not start", u.name);
    let _ = sbns;
    pid
}

/// What a refusal must not change: records, leases, veths in the sandbox.
fn snapshot(sb: &Sandbox) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut v = sb.veths();
    v.sort();
    (sb.endpoint_files(), sb.lease_files(), v)
}

fn record(sb: &Sandbox, id: &str) -> Value {
    let text = std::fs::read_to_string(sb.run_dir.join("endpoints").join(format!("{id}.json")))
        .unwrap_or_else(|e| panic!("record of {id}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn ps_ids(r: &Run) -> Vec<String> {
    let v: Vec<Value> =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("ps json: {e}: {}", r.stdout));
    v.iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn write_acl(sb: &Sandbox, text: &str) {
    let p = sb.config_dir.join("users.conf");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn networks(sb: &Sandbox) {
    sb.nethook(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.90.41.0/24",
        "--no-dns",
    ])
    .ok();
    sb.nethook(&[
        "network",
        "create",
        "db",
        "--subnet",
        "10.90.42.0/24",
        "--no-dns",
    ])
    .ok();
}

#[test]
fn setuid_user_attaches_only_their_own_netns_within_the_acl() {
    if !can_run("setuid", TOOLS) {
        return;
    }
    // Drop order (reverse): the binary, the sandbox (kills the users' processes), the users.
    let alice = TestUser::new();
    let bob = TestUser::new();
    let sb = Sandbox::new("suid");
    let bin = SetuidBin::install(&sb);
    networks(&sb);
    let bob_group = run(Command::new("id").args(["-gn", &bob.name]), None)
        .ok()
        .stdout
        .trim()
        .to_string();
    write_acl(
        &sb,
        &format!(
            "# user or @group   network   max interfaces\n{} web 2\n@{bob_group} web 1\n",
            alice.name
        ),
    );
    let pa = rootless_ns(&sb, &alice);
    let pb = rootless_ns(&sb, &bob);
    let pa_ns = format!("/proc/{pa}/ns/net");
    let root_ns = sb.add_netns("rootns");

    // Allowed: alice, her own namespace, a granted network.
    let out = as_user(
        &sb,
        &bin,
        &alice,
        &["attach", &format!("pid:{pa}"), "--network", "web"],
    )
    .ok();
    let id1 = format!("{}-pid-{pa}", alice.name);
    assert!(
        out.stdout.starts_with(&format!("{id1} web eth0 10.90.41.")),
        "{}",
        out.stdout
    );
    assert_eq!(record(&sb, &id1)["owner"], alice.uid);
    let addrs = Sandbox::addrs4_in(&pa_ns);
    let eth0: Vec<_> = addrs.iter().filter(|(i, _)| i == "eth0").collect();
    assert_eq!(eth0.len(), 1, "{addrs:?}");
    let ip = addr_of(&eth0[0].1);
    assert!(in_subnet(ip, "10.90.41.0/24"));
    sb.serve_in(&pa_ns, 8080, "hello-rootless");
    assert_eq!(
        sb.tcp_get(ip, 8080).as_deref().map(str::trim),
        Some("hello-rootless")
    );
    // A second interface: 2 of 2.
    let id2 = format!("{}-second", alice.name);
    as_user(
        &sb,
        &bin,
        &alice,
        &[
            "attach",
            &pa_ns,
            "--network",
            "web",
            "--ifname",
            "eth1",
            "--id",
            &id2,
        ],
    )
    .ok();

    let before = snapshot(&sb);
    let refused = |args: &[&str], needles: &[&str]| {
        as_user(&sb, &bin, &alice, args).refused(needles);
        assert_eq!(snapshot(&sb), before, "{args:?} changed something");
    };
    // Quota: a third interface on web.
    let id3 = format!("{}-third", alice.name);
    refused(
        &[
            "attach",
            &pa_ns,
            "--network",
            "web",
            "--ifname",
            "eth2",
            "--id",
            &id3,
        ],
        &["network web", "2 of at most 2"],
    );
    assert!(!Sandbox::link_names_in(&pa_ns).contains("eth2"));
    // A network the ACL does not name.
    refused(
        &[
            "attach",
            &pa_ns,
            "--network",
            "db",
            "--ifname",
            "eth3",
            "--id",
            &id3,
        ],
        &["network db", "not granted", "users.conf"],
    );
    // Bob's process and namespace; a root-owned namespace; the host's (pid 1, nethook's own).
    refused(
        &[
            "attach",
            &format!("pid:{pb}"),
            "--network",
            "web",
            "--id",
            &id3,
        ],
        &[&format!("pid:{pb}"), "not yours"],
    );
    refused(
        &[
            "attach",
            &format!("/proc/{pb}/ns/net"),
            "--network",
            "web",
            "--id",
            &id3,
        ],
        &[&format!("/proc/{pb}/ns/net"), "may not open it"],
    );
    refused(
        &[
            "attach",
            &format!("/run/netns/{root_ns}"),
            "--network",
            "web",
            "--id",
            &id3,
        ],
        &["belongs to root"],
    );
    refused(
        &["attach", &root_ns, "--network", "web", "--id", &id3],
        &["belongs to root"],
    );
    refused(
        &["attach", "pid:1", "--network", "web", "--id", &id3],
        &["pid:1", "not yours"],
    );
    refused(
        &["attach", "/proc/1/ns/net", "--network", "web", "--id", &id3],
        &["/proc/1/ns/net"],
    );
    // An fd of root's namespace that alice opened herself (nsfs files are world-readable) and
    // handed down: opening it works, the owner check refuses it.
    let fd_trick = run(
        alice.cmd_in(&sb.path(), "sh").args([
            "-c".to_string(),
            format!(
                "exec 7</run/netns/{root_ns}; exec {} attach /proc/self/fd/7 --network web --id {id3}",
                bin.path
            ),
        ]),
        None,
    );
    fd_trick.refused(&["/proc/self/fd/7", "belongs to root"]);
    assert_eq!(snapshot(&sb), before);
    for own in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
        refused(
            &["attach", own, "--network", "web", "--id", &id3],
            &[own, "belongs to root"],
        );
    }
    // Flags a user may not use, ids without the user's prefix.
    refused(
        &[
            "attach",
            &pa_ns,
            "--network",
            "web",
            "--publish",
            "22:22",
            "--id",
            &id3,
        ],
        &["--publish", "setuid mode"],
    );
    refused(
        &[
            "attach",
            &pa_ns,
            "--network",
            "web",
            "--mac",
            "02:42:ac:11:00:05",
            "--id",
            &id3,
        ],
        &["--mac"],
    );
    refused(
        &[
            "attach",
            &pa_ns,
            "--network",
            "web",
            "--alias",
            "db",
            "--id",
            &id3,
        ],
        &["--alias"],
    );
    refused(
        &["attach", &pa_ns, "--network", "web", "--id", "web-1"],
        &["--id web-1", &format!("{}-", alice.name)],
    );
    // Commands a user may not run.
    for args in [
        vec!["gc"],
        vec!["restore"],
        vec!["network", "create", "evil", "--subnet", "10.90.43.0/24"],
        vec!["network", "rm", "web"],
        vec!["hook", "createRuntime"],
        vec!["dns", "serve"],
        vec!["check"],
    ] {
        refused(&args, &["not allowed in setuid mode"]);
    }
    as_user(&sb, &bin, &alice, &["network", "ls"]).ok();

    // The env variables and flags that move the dirs change nothing: a hostile config dir of
    // alice's granting 100 interfaces is not read, nothing lands in a hostile run dir.
    let hostile = sb.dir.join("hostile");
    std::fs::create_dir_all(hostile.join("c/networks")).unwrap();
    std::fs::copy(
        sb.config_dir.join("networks/web.json"),
        hostile.join("c/networks/web.json"),
    )
    .unwrap();
    std::fs::write(
        hostile.join("c/users.conf"),
        format!("{} web 100\n", alice.name),
    )
    .unwrap();
    run(
        Command::new("chown")
            .args(["-R", &format!("{}:{}", alice.uid, alice.gid)])
            .arg(&hostile),
        None,
    )
    .ok();
    let hc = hostile.join("c").display().to_string();
    let hr = hostile.join("r").display().to_string();
    let r = run(
        alice
            .cmd_in(&sb.path(), "env")
            .args([
                format!("NETHOOK_CONFIG_DIR={hc}"),
                format!("NETHOOK_RUN_DIR={hr}"),
                bin.path.clone(),
            ])
            .args([
                "attach",
                &pa_ns,
                "--network",
                "web",
                "--ifname",
                "eth2",
                "--id",
                &id3,
            ]),
        None,
    );
    r.refused(&["2 of at most 2"]);
    let r = as_user(
        &sb,
        &bin,
        &alice,
        &[
            "--config-dir",
            &hc,
            "--run-dir",
            &hr,
            "attach",
            &pa_ns,
            "--network",
            "web",
            "--ifname",
            "eth2",
            "--id",
            &id3,
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("--run-dir is ignored in setuid mode"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("2 of at most 2"), "{}", r.stderr);
    assert!(
        !hostile.join("r").exists(),
        "nethook wrote into the hostile run dir"
    );
    assert_eq!(snapshot(&sb), before);

    // Bob: granted through his group, one interface.
    let idb = format!("{}-pid-{pb}", bob.name);
    as_user(
        &sb,
        &bin,
        &bob,
        &["attach", &format!("pid:{pb}"), "--network", "web"],
    )
    .ok();
    as_user(
        &sb,
        &bin,
        &bob,
        &[
            "attach",
            &format!("pid:{pb}"),
            "--network",
            "web",
            "--ifname",
            "eth1",
            "--id",
            &format!("{}-2", bob.name),
        ],
    )
    .refused(&["1 of at most 1"]);

    // ps: each user sees only their own; root sees all.
    let mut mine = ps_ids(&as_user(&sb, &bin, &alice, &["--format", "json", "ps"]).ok());
    mine.sort();
    let mut want = vec![id1.clone(), id2.clone()];
    want.sort();
    assert_eq!(mine, want);
    let table = as_user(&sb, &bin, &alice, &["ps"]).ok().stdout;
    assert!(!table.contains(&bob.name), "{table}");
    assert_eq!(
        ps_ids(&as_user(&sb, &bin, &bob, &["--format", "json", "ps"]).ok()),
        vec![idb.clone()]
    );
    assert_eq!(sb.ps().len(), 3);

    // Detach: not bob's endpoint; her own, yes.
    as_user(&sb, &bin, &alice, &["detach", &idb]).refused(&[&idb, "not one of"]);
    assert!(sb.endpoint_files().contains(&format!("{idb}.json")));
    as_user(&sb, &bin, &alice, &["detach", &id1]).ok();
    as_user(&sb, &bin, &alice, &["detach", &id2]).ok();
    assert!(!Sandbox::link_names_in(&pa_ns).contains("eth0"));
    assert!(sb.tcp_dead(ip, 8080));
    // Root detaches anyone's.
    sb.nethook(&["detach", &idb]).ok();
    sb.assert_no_endpoints();
}

/// While a setuid attach runs (held on the user's quota lock): its capabilities, ids,
/// environment, umask and no_new_privs, read from /proc.
#[test]
fn setuid_process_is_stripped_while_it_works() {
    if !can_run("setuid_caps", TOOLS) {
        return;
    }
    let carol = TestUser::new();
    let sb = Sandbox::new("suidcap");
    let bin = SetuidBin::install(&sb);
    networks(&sb);
    write_acl(&sb, &format!("{} web 1\n", carol.name));
    let pc = rootless_ns(&sb, &carol);

    // Hold the user's lock, so the attach waits inside nethook.
    let locks = sb.run_dir.join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lockf = std::fs::File::create(locks.join(format!("user-{}.lock", carol.uid))).unwrap();
    // SAFETY: flock on a file we hold.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lockf), libc::LOCK_EX) },
        0
    );
    // A hostile environment and PATH: none of it may reach the process.
    let evil = sb.dir.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    let marker = sb.dir.join("evil-ran");
    for prog in [
        "ip", "nft", "nsenter", "sysctl", "modprobe", "ethtool", "tc", "sh", "nethook",
    ] {
        let p = evil.join(prog);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho {prog} >> {}\n", marker.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let child = carol
        .cmd_in(&sb.path(), "env")
        .args([
            format!("PATH={}", evil.display()),
            "LD_PRELOAD=/nonexistent.so".into(),
            format!("NETHOOK_RUN_DIR={}", sb.dir.join("x").display()),
            "RUST_BACKTRACE=1".into(),
            bin.path.clone(),
        ])
        .args(["attach", &format!("pid:{pc}"), "--network", "web"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status =
        |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // nsenter, setpriv and env exec in place: wait for nethook itself, past its start.
    let up = wait_until(Duration::from_secs(10), || {
        let s = status(pid);
        s.contains("Name:\tnethook") && s.contains("NoNewPrivs:\t1")
    });
    assert!(up, "the setuid nethook did not start: {}", status(pid));
    std::thread::sleep(Duration::from_millis(300));
    let s = status(pid);
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(&format!("{k}:")))
            .map(|l| l[k.len() + 1..].trim().to_string())
            .unwrap_or_default()
    };
    // CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21), nothing else, anywhere.
    let want = format!("{:016x}", (1u64 << 12) | (1u64 << 21));
    assert_eq!(field("CapEff"), want, "{s}");
    assert_eq!(field("CapPrm"), want, "{s}");
    assert_eq!(field("CapBnd"), want, "{s}");
    assert_eq!(field("CapInh"), "0000000000000000", "{s}");
    assert_eq!(field("CapAmb"), "0000000000000000", "{s}");
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Umask"), "0022");
    let uids: Vec<String> = field("Uid").split_whitespace().map(String::from).collect();
    assert_eq!(
        uids,
        vec![carol.uid.to_string(), "0".into(), "0".into(), "0".into()]
    );
    // (/proc/PID/environ shows the environment as exec gave it, not what nethook cleared:
    // what the clearing does is seen below, through a hostile PATH that nothing runs from.)
    // Nothing is applied before the lock is had.
    assert_eq!(sb.endpoint_files(), Vec::<String>::new());
    drop(lockf);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "a program from the hostile PATH ran");
    assert!(!sb.dir.join("x").exists(), "NETHOOK_RUN_DIR was honoured");
    let id = format!("{}-pid-{pc}", carol.name);
    assert!(sb.endpoint_files().contains(&format!("{id}.json")));
    as_user(&sb, &bin, &carol, &["detach", &id]).ok();
    assert!(!marker.exists(), "a program from the hostile PATH ran");
    sb.assert_no_endpoints();
}

/// users.conf must be root's, writable by root alone, and parse; no file grants nothing.
#[test]
fn setuid_acl_file_is_strict() {
    if !can_run("setuid_acl", TOOLS) {
        return;
    }
    let dave = TestUser::new();
    let sb = Sandbox::new("suidacl");
    let bin = SetuidBin::install(&sb);
    networks(&sb);
    let pd = rootless_ns(&sb, &dave);
    let attach = [
        "attach".to_string(),
        format!("pid:{pd}"),
        "--network".into(),
        "web".into(),
    ];
    let attach: Vec<&str> = attach.iter().map(String::as_str).collect();
    let acl = sb.config_dir.join("users.conf");
    let acl_s = acl.display().to_string();

    as_user(&sb, &bin, &dave, &attach).refused(&[&acl_s, "does not exist"]);
    // Granted, but the file is world-writable, then owned by dave.
    write_acl(&sb, &format!("{} web 1\n", dave.name));
    std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o666)).unwrap();
    as_user(&sb, &bin, &dave, &attach).refused(&[&acl_s, "not trusted"]);
    std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&acl, Some(dave.uid), None).unwrap();
    as_user(&sb, &bin, &dave, &attach).refused(&[&acl_s, "not trusted"]);
    // A symlink to a root-owned file is not followed.
    std::fs::remove_file(&acl).unwrap();
    let real = sb.dir.join("real-users.conf");
    std::fs::write(&real, format!("{} web 1\n", dave.name)).unwrap();
    std::os::unix::fs::symlink(&real, &acl).unwrap();
    as_user(&sb, &bin, &dave, &attach).refused(&[&acl_s]);
    std::fs::remove_file(&acl).unwrap();
    // A bad line names the file and the line.
    write_acl(
        &sb,
        &format!("# ok\n{} web 1\n{} web lots\n", dave.name, dave.name),
    );
    as_user(&sb, &bin, &dave, &attach).refused(&[&format!("{acl_s} line 3")]);
    // A rule for someone else, and MAX 0: nothing granted.
    write_acl(&sb, "root web 5\n");
    as_user(&sb, &bin, &dave, &attach).refused(&["not granted"]);
    write_acl(&sb, &format!("{} web 0\n", dave.name));
    as_user(&sb, &bin, &dave, &attach).refused(&["0 of at most 0"]);
    sb.assert_no_endpoints();
    // And the right file works.
    write_acl(&sb, &format!("{} web 1\n", dave.name));
    as_user(&sb, &bin, &dave, &attach).ok();
    as_user(
        &sb,
        &bin,
        &dave,
        &["detach", &format!("{}-pid-{pd}", dave.name)],
    )
    .ok();
    sb.assert_no_endpoints();
}

/// The hook (as root) never writes through a rootfs symlink: etc/hosts -> /etc/shadow fails
/// with a clear message and leaves the host's /etc/shadow as it was.
#[test]
fn hook_refuses_rootfs_hosts_symlink_to_host_shadow() {
    if !can_run("shadow", &[]) {
        return;
    }
    // No useradd/userdel of the other tests meanwhile: they change /etc/shadow.
    let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
    let shadow = Path::new("/etc/shadow");
    let Ok(before) = std::fs::read(shadow) else {
        eprintln!("skipping shadow: no /etc/shadow");
        return;
    };
    let mtime = std::fs::metadata(shadow).unwrap().modified().unwrap();
    let sb = Sandbox::new("shadow");
    let pid = sb.spawn_unshared_sleep();
    let b = hand_bundle(&sb, "shadow", &[]);
    std::fs::create_dir_all(b.join("rootfs/etc")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", b.join("rootfs/etc/hosts")).unwrap();
    let state = create_state("shadowctr", Some(pid), &b);
    let r = sb.nethook_stdin(&["hook", "createRuntime"], state.as_bytes());
    r.refused(&["container file /etc/hosts", "is a symbolic link"]);
    assert_eq!(
        std::fs::read(shadow).unwrap(),
        before,
        "/etc/shadow changed"
    );
    assert_eq!(
        std::fs::metadata(shadow).unwrap().modified().unwrap(),
        mtime
    );
    // The link is still a link; nothing was created in its place or at its target.
    assert!(std::fs::symlink_metadata(b.join("rootfs/etc/hosts"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!b.join("rootfs/etc/shadow").exists());
    sb.assert_no_endpoints();
}
