//! Offloads through the SIOCETHTOOL ioctl, the way `ethtool -K` does it without the ethtool
//! netlink family: the kernel's named feature bits (ETHTOOL_GSTRINGS of ETH_SS_FEATURES),
//! read with ETHTOOL_GFEATURES and changed with ETHTOOL_SFEATURES.
//!
//! Why not the legacy one-feature commands (ETHTOOL_STSO and friends): their masks are frozen
//! in the kernel, and new feature bits are left out. On 6.18, ETHTOOL_STSO off leaves
//! tx-tcp-accecn-segmentation on, so `ethtool -k` still says tcp-segmentation-offload: on.
//! Matching by name, with ethtool's own patterns, covers every bit the kernel has.
//!
//! The ioctl acts on the interface of that name in the network namespace of the socket, so the
//! caller enters the container's netns before calling (the socket is opened here, per call).

use crate::error::{Error, Result};
use crate::tuning::Offload;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// linux/sockios.h.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
// linux/ethtool.h.
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// More feature names than this is not a kernel (there are about 70 today).
const MAX_FEATURES: u32 = 1024;

/// The kernel feature names an offload covers: ethtool's off_flag_def table (ethtool.c),
/// `*` matching any run of characters.
fn patterns(o: Offload) -> &'static [&'static str] {
    match o {
        Offload::RxChecksum => &["rx-checksum"],
        Offload::TxChecksum => &["tx-checksum-*"],
        Offload::Sg => &["tx-scatter-gather*"],
        Offload::Tso => &["tx-tcp*-segmentation"],
        Offload::Gso => &["tx-generic-segmentation"],
        Offload::Gro => &["rx-gro"],
    }
}

/// Glob with `*` only.
fn glob(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Which offloads the kernel turns off when another one is off (netdev_fix_features), to
/// explain a setting that did not stick.
fn depends_on(o: Offload) -> &'static str {
    match o {
        Offload::Tso => "tso needs sg and tx on",
        Offload::Gso => "gso needs sg on",
        Offload::Sg => "sg needs tx on",
        _ => "the driver decides",
    }
}

fn check_ifname(ifname: &str) -> Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains(['\0', '/']) {
        return Err(Error::invalid(
            format!("interface name {ifname:?}"),
            "is not a valid interface name",
            "give the name of a link, 1-15 bytes",
        ));
    }
    Ok(())
}

/// A buffer for one ethtool command, 8-byte aligned (ethtool_sset_info has a u64 at offset 8).
struct Buf(Vec<u64>);

impl Buf {
    fn new(bytes: usize) -> Buf {
        Buf(vec![0; bytes.div_ceil(8)])
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: any u64 memory is valid as bytes; the length is the same memory.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 8) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and every byte pattern is a valid u64.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 8) }
    }
    fn put(&mut self, off: usize, v: u32) {
        self.bytes_mut()[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn get(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes()[off..off + 4]);
        u32::from_ne_bytes(b)
    }
}

/// The feature bits of one interface, by name, and their state.
struct Features {
    names: Vec<String>,
    /// Per 32-bit block: available (changeable), requested, active, never_changed.
    blocks: Vec<[u32; 4]>,
}

impl Features {
    fn bit(v: &[[u32; 4]], i: usize, field: usize) -> bool {
        v[i / 32][field] & (1 << (i % 32)) != 0
    }
    /// The bits of `o`'s patterns.
    fn bits(&self, o: Offload) -> Vec<usize> {
        (0..self.names.len())
            .filter(|&i| patterns(o).iter().any(|p| glob(p, &self.names[i])))
            .collect()
    }
    /// On when any of its bits is active: what `ethtool -k` prints for the group.
    fn active(&self, o: Offload) -> bool {
        self.bits(o)
            .into_iter()
            .any(|i| Self::bit(&self.blocks, i, 2))
    }
    fn changeable(&self, o: Offload) -> Vec<usize> {
        self.bits(o)
            .into_iter()
            .filter(|&i| Self::bit(&self.blocks, i, 0))
            .collect()
    }
}

struct Dev<'a> {
    sock: OwnedFd,
    ifname: &'a str,
}

impl<'a> Dev<'a> {
    /// An AF_INET datagram socket in the current netns: any socket takes SIOCETHTOOL.
    fn open(ifname: &'a str) -> Result<Dev<'a>> {
        check_ifname(ifname)?;
        // SAFETY: plain syscall; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::io(
                "opening a socket for ethtool ioctls",
                std::io::Error::last_os_error(),
                "check the process fd limit",
            ));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Dev { sock, ifname })
    }

    /// One SIOCETHTOOL with `buf` as the command; returns the ioctl's (non-negative) result.
    fn ioctl(&self, buf: &mut Buf) -> std::io::Result<i32> {
        // SAFETY: ifreq is plain data; all zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        // check_ifname made sure the name fits with its NUL (the array is zeroed).
        for (d, s) in ifr.ifr_name.iter_mut().zip(self.ifname.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = buf.0.as_mut_ptr().cast();
        // SAFETY: ifr and buf live across the call; each command's buffer is sized for what
        // the kernel reads and writes (the counts in it come from the kernel's own answer).
        let r = unsafe { libc::ioctl(self.sock.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r)
    }

    fn error(&self, doing: &str, e: std::io::Error) -> Error {
        let what = format!("{doing} on {}", self.ifname);
        match e.raw_os_error() {
            Some(libc::ENODEV) => Error::invalid(
                what,
                "no such interface in this network namespace",
                "check the interface name and that the caller is in the container's netns",
            ),
            Some(libc::EOPNOTSUPP) => Error::kernel(
                what,
                "the driver does not support ethtool features",
                "drop the offload settings for this network",
            ),
            Some(libc::EPERM) | Some(libc::EACCES) => Error::kernel(
                what,
                e.to_string(),
                "run as root (CAP_NET_ADMIN in the interface's network namespace)",
            ),
            _ => Error::kernel(
                what,
                e.to_string(),
                "check 'nethook doctor' and the kernel log",
            ),
        }
    }

    fn features(&self) -> Result<Features> {
        let doing = "reading the offload features";
        // ethtool_sset_info: cmd, reserved, sset_mask u64, then one u32 per set in the mask.
        let mut b = Buf::new(24);
        b.put(0, ETHTOOL_GSSET_INFO);
        b.0[1] = 1 << ETH_SS_FEATURES;
        self.ioctl(&mut b).map_err(|e| self.error(doing, e))?;
        let count = if b.0[1] & (1 << ETH_SS_FEATURES) != 0 {
            b.get(16)
        } else {
            0
        };
        if count == 0 || count > MAX_FEATURES {
            return Err(Error::kernel(
                format!("{doing} on {}", self.ifname),
                format!("the kernel lists {count} feature names"),
                "check 'nethook doctor' and the kernel log",
            ));
        }
        let n = count as usize;
        // ethtool_gstrings: cmd, string_set, len, then len names of 32 bytes.
        let mut s = Buf::new(12 + n * ETH_GSTRING_LEN);
        s.put(0, ETHTOOL_GSTRINGS);
        s.put(4, ETH_SS_FEATURES);
        s.put(8, count);
        // The kernel writes as many names as it counts itself, not as many as asked; for
        // ETH_SS_FEATURES that is NETDEV_FEATURE_COUNT, fixed when the kernel was built, so the
        // count from GSSET_INFO is the count here. Checked anyway.
        self.ioctl(&mut s).map_err(|e| self.error(doing, e))?;
        if s.get(8) != count {
            return Err(Error::kernel(
                format!("{doing} on {}", self.ifname),
                format!(
                    "the kernel listed {} names after counting {count}",
                    s.get(8)
                ),
                "check 'nethook doctor' and the kernel log",
            ));
        }
        let names = s.bytes()[12..12 + n * ETH_GSTRING_LEN]
            .chunks(ETH_GSTRING_LEN)
            .map(|c| {
                let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
                String::from_utf8_lossy(&c[..end]).into_owned()
            })
            .collect();
        // ethtool_gfeatures: cmd, size, then size blocks of 4 u32.
        let size = n.div_ceil(32);
        let mut g = Buf::new(8 + size * 16);
        g.put(0, ETHTOOL_GFEATURES);
        g.put(4, size as u32);
        self.ioctl(&mut g).map_err(|e| self.error(doing, e))?;
        let blocks = (0..size)
            .map(|i| {
                let o = 8 + i * 16;
                [g.get(o), g.get(o + 4), g.get(o + 8), g.get(o + 12)]
            })
            .collect();
        Ok(Features { names, blocks })
    }

    /// ETHTOOL_SFEATURES: for each bit in `valid`, request `on`.
    fn set(&self, blocks: usize, changes: &[(usize, bool)]) -> Result<()> {
        // ethtool_sfeatures: cmd, size, then size blocks of (valid, requested).
        let mut b = Buf::new(8 + blocks * 8);
        b.put(0, ETHTOOL_SFEATURES);
        b.put(4, blocks as u32);
        for &(i, on) in changes {
            let o = 8 + (i / 32) * 8;
            let m = 1u32 << (i % 32);
            let valid = b.get(o) | m;
            b.put(o, valid);
            if on {
                let req = b.get(o + 4) | m;
                b.put(o + 4, req);
            }
        }
        // A positive result (ETHTOOL_F_WISH and the like) says some bit did not take; the
        // read-back in set_offloads turns that into an error that names the offload.
        self.ioctl(&mut b)
            .map(|_| ())
            .map_err(|e| self.error("changing offloads", e))
    }
}

/// Whether offload `o` is on for `ifname` now (as `ethtool -k` shows it: on when any of the
/// kernel features it groups is active).
pub fn get_offload(ifname: &str, o: Offload) -> Result<bool> {
    let dev = Dev::open(ifname)?;
    Ok(dev.features()?.active(o))
}

/// Switch offloads on `ifname` in one request, then read them back: the kernel derives the
/// effective set from what was asked (tso stays off while sg is off), so a setting that did not
/// stick is an error naming the dependency. An offload the driver cannot change is an error
/// only when it is not already as asked.
pub fn set_offloads(ifname: &str, offloads: &BTreeMap<Offload, bool>) -> Result<()> {
    if offloads.is_empty() {
        return Ok(());
    }
    let dev = Dev::open(ifname)?;
    let before = dev.features()?;
    let mut changes = Vec::new();
    for (&o, &on) in offloads {
        let bits = before.changeable(o);
        if bits.is_empty() && before.active(o) != on {
            return Err(Error::kernel(
                format!(
                    "turning {} offload {} ({}) on {ifname}",
                    on_off(on),
                    o.name(),
                    o.long_name()
                ),
                "the driver does not support changing it",
                format!(
                    "drop offload.{} from the network or container settings",
                    o.name()
                ),
            ));
        }
        changes.extend(bits.into_iter().map(|i| (i, on)));
    }
    if !changes.is_empty() {
        dev.set(before.blocks.len(), &changes)?;
    }
    let after = dev.features()?;
    for (&o, &on) in offloads {
        // The same test as get_offload, so that after success it reads what was asked: off
        // means no bit of the group active, fixed ones included.
        let now = after.active(o);
        if now != on {
            return Err(Error::kernel(
                format!("turning {} offload {} on {ifname}", on_off(on), o.name()),
                format!("the kernel kept it {} ({})", on_off(now), depends_on(o)),
                "set the offloads it depends on too, or drop this setting",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_ethtool() {
        assert!(glob("tx-tcp*-segmentation", "tx-tcp-segmentation"));
        assert!(glob("tx-tcp*-segmentation", "tx-tcp6-segmentation"));
        assert!(glob("tx-tcp*-segmentation", "tx-tcp-accecn-segmentation"));
        assert!(!glob("tx-tcp*-segmentation", "tx-udp-segmentation"));
        assert!(!glob("tx-tcp*-segmentation", "tx-tcp-segmentation-x"));
        assert!(glob("tx-checksum-*", "tx-checksum-ip-generic"));
        assert!(!glob("tx-checksum-*", "rx-checksum"));
        assert!(glob("tx-scatter-gather*", "tx-scatter-gather"));
        assert!(glob("tx-scatter-gather*", "tx-scatter-gather-fraglist"));
        assert!(glob("rx-gro", "rx-gro"));
        assert!(!glob("rx-gro", "rx-gro-hw"));
        assert!(!glob("rx-gro", "rx-gr"));
    }

    #[test]
    fn groups_from_feature_names() {
        let names: Vec<String> = [
            "tx-scatter-gather",
            "tx-checksum-ip-generic",
            "tx-tcp-segmentation",
            "tx-tcp-accecn-segmentation",
            "rx-gro",
            "rx-checksum",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // available: all but rx-checksum; active: only accecn TSO and rx-checksum.
        let f = Features {
            names,
            blocks: vec![[0b011111, 0, 0b101000, 0]],
        };
        assert_eq!(f.bits(Offload::Tso), vec![2, 3]);
        assert!(f.active(Offload::Tso), "one TSO bit on is TSO on");
        assert!(!f.active(Offload::Sg));
        assert!(f.active(Offload::RxChecksum));
        assert!(f.changeable(Offload::RxChecksum).is_empty());
        assert!(f.bits(Offload::Gso).is_empty());
    }

    #[test]
    fn bad_names_are_refused_without_a_syscall() {
        for n in ["", "a-name-of-16-byt", "a/b", "a\0b"] {
            let e = get_offload(n, Offload::Tso).unwrap_err().to_string();
            assert!(e.contains("interface name"), "{n:?}: {e}");
            let m: BTreeMap<_, _> = [(Offload::Gro, false)].into();
            assert!(set_offloads(n, &m).is_err());
        }
        // Nothing to do is no error, even for a name that does not exist.
        assert!(set_offloads("", &BTreeMap::new()).is_ok());
    }

    #[test]
    fn missing_interface_is_named() {
        let e = get_offload("nhnosuchif0", Offload::Gro)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nhnosuchif0"), "{e}");
    }

    #[test]
    fn loopback_features_read() {
        // Every namespace has lo, and reading features needs no privilege.
        let dev = Dev::open("lo").unwrap();
        let f = dev.features().unwrap();
        assert!(f.names.iter().any(|n| n == "rx-gro"), "{:?}", f.names);
        assert!(!f.bits(Offload::Tso).is_empty());
    }
}
