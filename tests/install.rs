//! `contrib/install.sh` as a packager runs it: into a temp `DESTDIR`, with and without `PREFIX`,
//! then `--uninstall`. Checked file by file: where each one lands, its mode, and that what it
//! says is right (the hooks JSON and the units name the installed binary, the man page is a man
//! page, the completions know the commands). No root needed: nothing outside the temp dir is
//! written.

mod common;

use common::{run, unique, BIN};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/install.sh");

/// A temp dir, removed at drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(short: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(short));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `install.sh [ARGS]` with DESTDIR, PREFIX (None: unset) and the test's binary.
fn install_sh(destdir: &Path, prefix: Option<&str>, args: &[&str]) -> common::Run {
    let mut c = Command::new("bash");
    c.arg(INSTALL)
        .args(args)
        .env("DESTDIR", destdir)
        .env("NETHOOK_BIN", BIN)
        .env_remove("PREFIX");
    if let Some(p) = prefix {
        c.env("PREFIX", p);
    }
    run(&mut c, None)
}

/// Every file (not directory) under `root`, as paths relative to it ("usr/local/bin/nethook").
fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Every directory under `root` (relative), `root` itself excluded.
fn dirs_under(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                let p = e.path();
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The commands a user types, which every completion script must offer.
const COMMANDS: &[&str] = &[
    "network",
    "hook",
    "attach",
    "detach",
    "ps",
    "port",
    "check",
    "gc",
    "doctor",
    "restore",
    "completions",
    "man",
    "version",
];

/// Everything one install must have put under `dest` for `prefix`, checked file by file.
/// Returns the installed files (relative to `dest`).
#[track_caller]
fn assert_installed(dest: &Path, prefix: &str) -> BTreeSet<String> {
    let rel = |p: &str| format!("{}{p}", prefix.trim_start_matches('/'));
    let bin_path = format!("{prefix}/bin/nethook");
    let expected: Vec<(String, u32)> = vec![
        (rel("/bin/nethook"), 0o755),
        (
            "usr/share/containers/oci/hooks.d/50-nethook-create-runtime.json".into(),
            0o644,
        ),
        (
            "usr/share/containers/oci/hooks.d/50-nethook-poststop.json".into(),
            0o644,
        ),
        ("etc/systemd/system/nethook-restore.service".into(), 0o644),
        ("etc/systemd/system/nethook-gc.service".into(), 0o644),
        ("etc/systemd/system/nethook-gc.timer".into(), 0o644),
        ("etc/systemd/system/nethook-agent.service".into(), 0o644),
        (rel("/share/man/man1/nethook.1"), 0o644),
        (rel("/share/bash-completion/completions/nethook"), 0o644),
        (rel("/share/zsh/site-functions/_nethook"), 0o644),
        (rel("/share/fish/vendor_completions.d/nethook.fish"), 0o644),
        (rel("/share/nethook/runc-config-snippet.json"), 0o644),
        (rel("/share/nethook/installed-files"), 0o644),
    ];
    let installed = files_under(dest);
    let want: BTreeSet<String> = expected.iter().map(|(p, _)| p.clone()).collect();
    for (p, m) in &expected {
        assert!(
            installed.contains(p),
            "{p} was not installed: {installed:?}"
        );
        assert_eq!(mode(&dest.join(p)), *m, "mode of {p}");
    }

    // The binary is the one built, and runs.
    let b = dest.join(rel("/bin/nethook"));
    assert_eq!(std::fs::read(&b).unwrap(), std::fs::read(BIN).unwrap());
    let v = run(Command::new(&b).arg("version"), None).ok();
    assert!(v.stdout.starts_with("nethook "), "{}", v.stdout);

    // podman's hooks: oci-hooks 1.0.0 naming the installed binary, one per stage, only for
    // containers with a nethook.network annotation, with a PATH (podman runs poststop with an
    // empty environment).
    for (file, stage) in [
        ("50-nethook-create-runtime.json", "createRuntime"),
        ("50-nethook-poststop.json", "poststop"),
    ] {
        let p = dest.join("usr/share/containers/oci/hooks.d").join(file);
        let h: Value =
            serde_json::from_str(&read(&p)).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        assert_eq!(h["version"], "1.0.0", "{file}");
        assert_eq!(h["hook"]["path"], bin_path.as_str(), "{file}");
        let args: Vec<&str> = h["hook"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args, vec!["nethook", "hook", stage], "{file}");
        assert_eq!(h["stages"], serde_json::json!([stage]), "{file}");
        let env: Vec<&str> = h["hook"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            env.iter().any(|e| e.starts_with("PATH=/")),
            "{file}: no PATH in {env:?}"
        );
        let when = h["when"]["annotations"]
            .as_object()
            .expect("when.annotations");
        assert_eq!(
            when.keys().collect::<Vec<_>>(),
            vec!["^nethook\\.network$"],
            "{file}"
        );
        assert!(
            h["hook"]["timeout"].as_u64().is_some_and(|t| t > 0),
            "{file}"
        );
    }
    // The runc/crun snippet names it too.
    let snippet: Value = serde_json::from_str(&read(
        &dest.join(rel("/share/nethook/runc-config-snippet.json")),
    ))
    .unwrap();
    for stage in ["createRuntime", "poststop"] {
        assert_eq!(snippet["hooks"][stage][0]["path"], bin_path.as_str());
    }

    // systemd units run the installed binary.
    let unit = |u: &str| read(&dest.join("etc/systemd/system").join(u));
    let restore = unit("nethook-restore.service");
    assert!(
        restore.contains(&format!("\nExecStart={bin_path} restore\n")),
        "{restore}"
    );
    assert!(
        restore.contains("\nType=oneshot\n") && restore.contains("\nWantedBy=multi-user.target\n")
    );
    let gc = unit("nethook-gc.service");
    assert!(gc.contains(&format!("\nExecStart={bin_path} gc\n")), "{gc}");
    let timer = unit("nethook-gc.timer");
    assert!(timer.contains("\n[Timer]\n") && timer.contains("\nWantedBy=timers.target\n"));
    assert!(timer.contains("\nOnUnitActiveSec="), "{timer}");
    for u in [&restore, &gc, &timer] {
        assert!(
            !u.contains("/usr/local/bin") || prefix == "/usr/local",
            "a unit still names /usr/local/bin: {u}"
        );
    }
    verify_units(&dest.join("etc/systemd/system"), &bin_path);

    // The man page is a man page, about nethook, naming its commands.
    let man = read(&dest.join(rel("/share/man/man1/nethook.1")));
    let head: Vec<&str> = man.lines().take(5).collect();
    assert!(
        head.iter().any(|l| l.starts_with(".TH nethook 1")),
        "no .TH header in the first lines of nethook.1: {head:?}"
    );
    for s in [".SH NAME", ".SH SYNOPSIS", ".SH COMMANDS", ".SH FILES"] {
        assert!(man.contains(s), "nethook.1 has no {s}");
    }
    for c in ["network create", "hook", "attach", "gc", "restore"] {
        assert!(
            man.contains(&format!("nethook {}", c.replace('-', "\\-"))),
            "nethook.1 does not describe `nethook {c}`"
        );
    }
    if common_tool("man") {
        let r = run(
            Command::new("man")
                .arg("-l")
                .arg(dest.join(rel("/share/man/man1/nethook.1")))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100"),
            None,
        )
        .ok();
        assert!(r.stdout.contains("NAME"), "man -l rendered: {}", r.stdout);
        assert!(r.stdout.contains("nethook network create"), "{}", r.stdout);
    }

    // The completions know the commands.
    let bash = read(&dest.join(rel("/share/bash-completion/completions/nethook")));
    assert!(
        bash.contains("complete -F _nethook"),
        "bash completion: no complete -F"
    );
    let zsh = read(&dest.join(rel("/share/zsh/site-functions/_nethook")));
    assert!(zsh.starts_with("#compdef nethook"), "zsh completion header");
    let fish = read(&dest.join(rel("/share/fish/vendor_completions.d/nethook.fish")));
    assert!(fish.contains("complete -c nethook"), "fish completion");
    for c in COMMANDS {
        for (shell, text) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            assert!(
                text.contains(c),
                "the {shell} completion does not offer `{c}`"
            );
        }
    }
    if common_tool("bash") {
        // The bash script loads and completes the first word.
        let r = run(
            Command::new("bash").arg("-c").arg(format!(
                "source {}; COMP_WORDS=(nethook net); COMP_CWORD=1; COMP_LINE='nethook net'; \
                 COMP_POINT=11; _nethook nethook net nethook; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                dest.join(rel("/share/bash-completion/completions/nethook"))
                    .display()
            )),
            None,
        )
        .ok();
        assert_eq!(
            r.stdout.trim(),
            "network",
            "bash completed `nethook net` to {:?}",
            r.stdout
        );
    }

    // The manifest lists exactly what was installed (itself aside).
    let manifest = read(&dest.join(rel("/share/nethook/installed-files")));
    let listed: BTreeSet<String> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("f /"))
        .map(String::from)
        .collect();
    let mut without_manifest = want.clone();
    without_manifest.remove(&rel("/share/nethook/installed-files"));
    assert_eq!(listed, without_manifest, "manifest:\n{manifest}");
    installed
}

fn common_tool(t: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
        .unwrap_or(false)
}

/// `systemd-analyze verify` finds nothing wrong with the units, except (on a machine where
/// nethook is not installed) that the binary they name is missing.
fn verify_units(dir: &Path, bin_path: &str) {
    if !common_tool("systemd-analyze") {
        eprintln!("systemd-analyze is not installed: units not verified");
        return;
    }
    let units: Vec<PathBuf> = [
        "nethook-restore.service",
        "nethook-gc.service",
        "nethook-gc.timer",
        "nethook-agent.service",
    ]
    .iter()
    .map(|u| dir.join(u))
    .collect();
    let r = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&units),
        None,
    );
    let complaints: Vec<&str> = r
        .stderr
        .lines()
        .chain(r.stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains(&format!("Command {bin_path} is not executable")))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains:\n{}",
        complaints.join("\n")
    );
}

#[test]
fn install_into_destdir_then_uninstall_leaves_only_what_was_there() {
    let t = TempDir::new("inst");
    let dest = t.0.join("dest");
    // Another package's podman hook and a unit of the host's: neither may be touched.
    let other_hook = dest.join("usr/share/containers/oci/hooks.d/00-other.json");
    let other_unit = dest.join("etc/systemd/system/other.service");
    for p in [&other_hook, &other_unit] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "not nethook's\n").unwrap();
    }
    let before = files_under(&dest);
    let dirs_before = dirs_under(&dest);

    let r = install_sh(&dest, None, &[]).ok();
    assert!(r.stdout.contains("installed"), "{}", r.stdout);
    let installed = assert_installed(&dest, "/usr/local");
    assert!(installed.is_superset(&before));
    assert_eq!(read(&other_hook), "not nethook's\n");

    // Installing again (an upgrade) is fine and changes nothing in the list.
    install_sh(&dest, None, &[]).ok();
    assert_eq!(assert_installed(&dest, "/usr/local"), installed);

    let r = install_sh(&dest, None, &["--uninstall"]).ok();
    assert!(r.stdout.contains("uninstalled"), "{}", r.stdout);
    assert_eq!(files_under(&dest), before, "files left after --uninstall");
    assert_eq!(
        dirs_under(&dest),
        dirs_before,
        "directories left after --uninstall"
    );
    assert_eq!(read(&other_unit), "not nethook's\n");

    // A second --uninstall: nothing is installed, and it says so.
    let r = install_sh(&dest, None, &["--uninstall"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("nothing to uninstall"), "{}", r.stderr);
    assert_eq!(files_under(&dest), before);
}

#[test]
fn prefix_is_honoured_and_named_by_every_installed_file() {
    let t = TempDir::new("pfx");
    let dest = t.0.join("stage");
    // A trailing slash is the same prefix.
    install_sh(&dest, Some("/opt/nethook/"), &[]).ok();
    let installed = assert_installed(&dest, "/opt/nethook");
    // Nothing under /usr/local; podman's hooks still where podman looks.
    assert!(
        installed.iter().all(|f| !f.starts_with("usr/local")),
        "{installed:?}"
    );
    // Uninstall needs the same PREFIX: without it there is nothing to remove.
    let r = install_sh(&dest, None, &["--uninstall"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(files_under(&dest), installed);
    install_sh(&dest, Some("/opt/nethook"), &["--uninstall"]).ok();
    assert_eq!(files_under(&dest), BTreeSet::new());
    assert_eq!(dirs_under(&dest), BTreeSet::new());
}

#[test]
fn bad_invocations_are_refused_and_write_nothing() {
    let t = TempDir::new("badinst");
    let dest = t.0.join("dest");
    let r = install_sh(&dest, None, &["--bogus"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("usage:"), "{}", r.stderr);
    let r = install_sh(&dest, Some("relative/dir"), &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("PREFIX must be an absolute path"),
        "{}",
        r.stderr
    );
    let mut c = Command::new("bash");
    c.arg(INSTALL)
        .env("DESTDIR", &dest)
        .env("NETHOOK_BIN", t.0.join("no-such-binary"));
    let r = run(&mut c, None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("NETHOOK_BIN"), "{}", r.stderr);
    assert!(files_under(&t.0).is_empty(), "{:?}", files_under(&t.0));
}
