//! Offloads through the SIOCETHTOOL ioctl (what `ethtool -K` does on kernels without, or
//! before, the ethtool netlink family). The legacy per-feature commands are enough for the six
//! offloads nethook switches, and every kernel has them.
//!
//! The ioctl acts on the interface of that name in the network namespace of the socket, so the
//! caller enters the container's netns before calling (the socket is opened here, per call).

use crate::error::{Error, Result};
use crate::tuning::Offload;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// linux/sockios.h.
const SIOCETHTOOL: libc::c_ulong = 0x8946;

// linux/ethtool.h: the get/set pairs of `struct ethtool_value` commands.
const ETHTOOL_GRXCSUM: u32 = 0x14;
const ETHTOOL_SRXCSUM: u32 = 0x15;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GSG: u32 = 0x18;
const ETHTOOL_SSG: u32 = 0x19;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_GGSO: u32 = 0x23;
const ETHTOOL_SGSO: u32 = 0x24;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// The (get, set) commands of an offload.
fn commands(o: Offload) -> (u32, u32) {
    match o {
        Offload::Tso => (ETHTOOL_GTSO, ETHTOOL_STSO),
        Offload::Gso => (ETHTOOL_GGSO, ETHTOOL_SGSO),
        Offload::Gro => (ETHTOOL_GGRO, ETHTOOL_SGRO),
        Offload::Sg => (ETHTOOL_GSG, ETHTOOL_SSG),
        Offload::TxChecksum => (ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM),
        Offload::RxChecksum => (ETHTOOL_GRXCSUM, ETHTOOL_SRXCSUM),
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

/// An AF_INET datagram socket in the current netns: any socket takes SIOCETHTOOL, and this one
/// needs no privilege to open.
fn socket() -> Result<OwnedFd> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// One SIOCETHTOOL with a `struct ethtool_value`; returns the value the kernel wrote back.
fn ioctl(sock: &OwnedFd, ifname: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    let mut val = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain data; all zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // check_ifname made sure the name fits with its NUL (the array is zeroed).
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut val as *mut EthtoolValue).cast();
    // SAFETY: ifr and val live across the call; the kernel reads/writes exactly an
    // ethtool_value through ifru_data for these commands.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(val.data)
}

fn ioctl_error(ifname: &str, o: Offload, doing: &str, e: std::io::Error) -> Error {
    let what = format!("{doing} {} ({}) on {ifname}", o.name(), o.long_name());
    match e.raw_os_error() {
        Some(libc::ENODEV) => Error::invalid(
            what,
            "no such interface in this network namespace",
            "check the interface name and that the caller is in the container's netns",
        ),
        Some(libc::EOPNOTSUPP) => Error::kernel(
            what,
            "the driver does not support changing it",
            format!(
                "drop offload.{} from the network or container settings",
                o.name()
            ),
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

/// Whether offload `o` is on for `ifname` now (the effective state, as `ethtool -k` shows it).
pub fn get_offload(ifname: &str, o: Offload) -> Result<bool> {
    check_ifname(ifname)?;
    let sock = socket()?;
    get(&sock, ifname, o)
}

fn get(sock: &OwnedFd, ifname: &str, o: Offload) -> Result<bool> {
    ioctl(sock, ifname, commands(o).0, 0)
        .map(|v| v != 0)
        .map_err(|e| ioctl_error(ifname, o, "reading offload", e))
}

/// Switch offloads on `ifname`, then read every one back: the kernel records each request and
/// derives the effective set from all of them (tso stays off while sg is off, whatever the
/// order of the requests), so a setting that did not stick is an error naming the dependency.
pub fn set_offloads(ifname: &str, offloads: &BTreeMap<Offload, bool>) -> Result<()> {
    if offloads.is_empty() {
        return Ok(());
    }
    check_ifname(ifname)?;
    let sock = socket()?;
    for (&o, &on) in offloads {
        ioctl(&sock, ifname, commands(o).1, u32::from(on))
            .map_err(|e| ioctl_error(ifname, o, &format!("turning {} offload", on_off(on)), e))?;
    }
    for (&o, &on) in offloads {
        let now = get(&sock, ifname, o)?;
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
    fn commands_are_get_set_pairs() {
        for o in Offload::ALL {
            let (g, s) = commands(o);
            assert_eq!(s, g + 1, "{o}");
        }
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
        assert!(e.contains("nhnosuchif0") && e.contains("gro"), "{e}");
    }
}
