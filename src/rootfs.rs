//! /etc/hosts, /etc/hostname and /etc/resolv.conf for the container, written inside its rootfs
//! with every path resolved inside it (openat2 RESOLVE_IN_ROOT): a symlink in the rootfs
//! never makes nethook write outside it. Where config.json bind-mounts one of these files (podman
//! does), the bind source is what the container sees, so that is what is written.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What the container's files say.
#[derive(Debug, Clone)]
pub struct EtcFiles {
    pub hostname: String,
    pub aliases: Vec<String>,
    pub addrs: Vec<std::net::IpAddr>,
    pub nameservers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl EtcFiles {
    pub fn hosts(&self) -> String {
        let mut s = String::from(
            "# written by nethook\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        let mut names = vec![self.hostname.clone()];
        names.extend(self.aliases.iter().cloned());
        for a in &self.addrs {
            s.push_str(&format!("{a}\t{}\n", names.join(" ")));
        }
        if self.addrs.is_empty() {
            // Host and none networks: the name still resolves, to a loopback address (the
            // Debian convention for a host's own name without a fixed address).
            s.push_str(&format!("127.0.1.1\t{}\n", names.join(" ")));
        }
        s
    }
    pub fn hostname_file(&self) -> String {
        format!("{}\n", self.hostname)
    }
    pub fn resolv_conf(&self) -> String {
        let mut s = String::from("# written by nethook\n");
        if self.nameservers.is_empty() {
            s.push_str("# no upstream name server found on the host\n");
        }
        for n in &self.nameservers {
            s.push_str(&format!("nameserver {n}\n"));
        }
        if !self.search.is_empty() {
            s.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            s.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        s
    }
}

/// Where one file goes: inside the rootfs, or a bind source on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    InRoot { rootfs: PathBuf, path: &'static str },
    BindSource(PathBuf),
}

impl Target {
    /// The host path, for the endpoint record.
    pub fn host_path(&self) -> PathBuf {
        match self {
            Target::InRoot { rootfs, path } => rootfs.join(path.trim_start_matches('/')),
            Target::BindSource(p) => p.clone(),
        }
    }
}

/// Write `content` to `target`.
pub fn write(target: &Target, content: &str) -> Result<()> {
    match target {
        Target::InRoot { rootfs, path } => write_in_root(rootfs, path, content),
        Target::BindSource(p) => {
            // The source is a host path chosen by whoever wrote config.json (root): write it in
            // place, without following a symlink at the last component.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags_nofollow()
                .open(p)
                .map_err(|e| {
                    Error::io(
                        format!("writing bind-mounted {}", p.display()),
                        e,
                        "check the mount source in config.json",
                    )
                })?;
            f.write_all(content.as_bytes())
                .map_err(|e| Error::io(format!("writing {}", p.display()), e, "check the disk"))
        }
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}
impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

/// `openat2(2)` with `RESOLVE_IN_ROOT`: every component, `..` and absolute symlinks included,
/// is resolved as if `dirfd` were `/`, so nothing outside the rootfs can be reached. One syscall
/// per file, where a userspace resolver costs dozens.
fn openat2_in_root(
    dirfd: BorrowedFd<'_>,
    path: &str,
    flags: i32,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid fd, NUL-terminated path, a properly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

fn write_in_root(rootfs: &Path, path: &str, content: &str) -> Result<()> {
    let what = || format!("container file {path} in rootfs {}", rootfs.display());
    let root: OwnedFd = std::fs::File::open(rootfs)
        .map_err(|e| {
            Error::io(
                format!("rootfs {}", rootfs.display()),
                e,
                "check root.path in config.json",
            )
        })?
        .into();
    let rel = path.trim_start_matches('/');
    let (dir, _) = rel.rsplit_once('/').unwrap_or(("", rel));
    if !dir.is_empty() {
        // Make the directory (only a top-level one like /etc is ever needed) if it is missing.
        if let Err(e) = openat2_in_root(root.as_fd(), dir, libc::O_PATH | libc::O_DIRECTORY, 0) {
            if e.kind() != std::io::ErrorKind::NotFound || dir.contains('/') {
                return Err(Error::io(what(), e, "check the rootfs"));
            }
            let c = CString::new(dir).expect("no NUL in a constant path");
            // SAFETY: valid fd and path.
            if unsafe { libc::mkdirat(root.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(Error::io(what(), e, "check the rootfs"));
                }
            }
        }
    }
    // O_NOFOLLOW: a symlink as the file itself is refused rather than written through, even
    // though RESOLVE_IN_ROOT would keep it inside the rootfs (it could still name a file of the
    // container's own that must not be overwritten, like /etc/shadow).
    let fd = openat2_in_root(
        root.as_fd(),
        rel,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
        0o644,
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::invalid(
                what(),
                "is a symbolic link",
                "nethook never writes through a link: replace it with a regular file",
            )
        } else {
            Error::io(what(), e, "check the rootfs")
        }
    })?;
    let mut f = std::fs::File::from(fd);
    f.write_all(content.as_bytes())
        .map_err(|e| Error::io(what(), e, "check the disk"))
}

/// The host's upstream name servers for containers: from /etc/resolv.conf, skipping 127.x stubs
/// (unreachable from a container); where only stubs are listed, systemd-resolved's real list.
/// The host's resolv.conf as it is, for a container that shares the host's namespace (where
/// even a 127.0.0.53 stub answers).
pub fn host_resolv_conf() -> String {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    format!("# copied from the host by nethook\n{text}")
}

pub fn host_resolvers() -> (Vec<Ipv4Addr>, Vec<String>, Vec<String>) {
    let parse = |text: &str| {
        let mut ns = Vec::new();
        let mut search = Vec::new();
        let mut opts = Vec::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            match it.next() {
                Some("nameserver") => {
                    if let Some(Ok(ip)) = it.next().map(|s| s.parse::<Ipv4Addr>()) {
                        if !ip.is_loopback() && ns.len() < 3 {
                            ns.push(ip);
                        }
                    }
                }
                Some("search") | Some("domain") => search = it.map(String::from).collect(),
                Some("options") => opts = it.map(String::from).collect(),
                _ => {}
            }
        }
        (ns, search, opts)
    };
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (ns, search, opts) = parse(&main);
    if ns.is_empty() {
        if let Ok(real) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            let (ns2, _, _) = parse(&real);
            return (ns2, search, opts);
        }
    }
    (ns, search, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> EtcFiles {
        EtcFiles {
            hostname: "web".into(),
            aliases: vec!["w".into()],
            addrs: vec!["10.89.0.2".parse().unwrap()],
            nameservers: vec!["192.0.2.53".parse().unwrap()],
            search: vec![],
            options: vec![],
        }
    }

    #[test]
    fn contents() {
        let f = files();
        assert!(f.hosts().contains("10.89.0.2\tweb w\n"));
        assert!(f.hosts().contains("127.0.0.1\tlocalhost"));
        assert_eq!(f.hostname_file(), "web\n");
        assert!(f.resolv_conf().contains("nameserver 192.0.2.53\n"));
    }

    #[test]
    fn writes_stay_in_the_rootfs() {
        let base = std::env::temp_dir().join(format!("nethook-rootfs-{}", std::process::id()));
        let rootfs = base.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        let outside = base.join("outside");
        std::fs::write(&outside, "secret").unwrap();
        // An absolute symlink resolves inside the root, not to the host file.
        std::os::unix::fs::symlink(&outside, rootfs.join("etc/hosts")).unwrap();
        let t = Target::InRoot {
            rootfs: rootfs.clone(),
            path: "/etc/hosts",
        };
        let _ = write(&t, "x\n");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
        // A plain write lands where it should.
        let t = Target::InRoot {
            rootfs: rootfs.clone(),
            path: "/etc/hostname",
        };
        write(&t, "web\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/hostname")).unwrap(),
            "web\n"
        );
        std::fs::remove_dir_all(base).unwrap();
    }
}
