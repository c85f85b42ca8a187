//! Validated names. Every name that reaches a file path or the kernel goes through one of these
//! types first, so a bad name is refused before anything is touched (DESIGN.md section 9).

use crate::error::Error;
use std::fmt;

/// A container id as runc accepts it: `[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

/// A network name: `[a-z0-9][a-z0-9_.-]{0,63}`, never `.` or `..`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkName(String);

/// A Linux interface name: 1 to 15 bytes, no `/`, no whitespace, not `.` or `..`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

/// The kernel's IFNAMSIZ minus the terminating NUL.
pub const IFNAME_MAX: usize = 15;

impl ContainerId {
    pub fn new(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Error::invalid(
                format!("container id {s:?}"),
                "must be 1-128 characters of letters, digits and _.+- starting with a letter or digit",
                "use the id runc was given",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl NetworkName {
    pub fn new(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s != "."
            && s != ".."
            && matches!(s.as_bytes()[0], b'a'..=b'z' | b'0'..=b'9')
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Error::invalid(
                format!("network name {s:?}"),
                "must be 1-64 characters of a-z, 0-9 and _.- starting with a letter or digit",
                "choose another name",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl IfName {
    pub fn new(s: &str) -> Result<Self, Error> {
        if s.len() > IFNAME_MAX {
            return Err(Error::invalid(
                format!("interface name {s:?}"),
                format!(
                    "is {} bytes, the kernel allows at most {IFNAME_MAX}",
                    s.len()
                ),
                "choose a shorter name",
            ));
        }
        let ok = !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Error::invalid(
                format!("interface name {s:?}"),
                "must be printable ASCII without '/', ':' or spaces",
                "choose another name",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_conversions {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                Self::new(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }
    };
}
string_conversions!(ContainerId);
string_conversions!(NetworkName);
string_conversions!(IfName);

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid(
                format!("MAC address {s:?}"),
                "is not six hex bytes separated by ':'",
                "write it like 02:42:ac:11:00:02",
            )
        };
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            out[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if out[0] & 1 == 1 {
            return Err(Error::invalid(
                format!("MAC address {s}"),
                "is a multicast address (lowest bit of the first byte set)",
                "use a unicast address, e.g. 02:.. for a locally administered one",
            ));
        }
        if out == [0; 6] {
            return Err(Error::invalid(
                format!("MAC address {s}"),
                "is all zeros",
                "use a real unicast address",
            ));
        }
        Ok(Mac(out))
    }

    /// A locally administered unicast MAC derived from an IPv4 address, as Docker does: unique
    /// wherever the address is, and stable for the lease.
    pub fn from_ipv4(ip: std::net::Ipv4Addr) -> Self {
        let o = ip.octets();
        Mac([0x02, 0x4e, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mac::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// 64-bit FNV-1a: a stable, dependency-free hash for deriving interface names (never addresses).
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The host-side veth name of a container's interface on a network: `nh` + 12 hex digits of a
/// hash of (network, container id): unique per endpoint, 14 bytes, stable so teardown can find it
/// from the id alone.
pub fn host_ifname(network: &NetworkName, id: &ContainerId) -> IfName {
    let h = fnv1a(&[network.as_str(), id.as_str()]);
    IfName(format!("nh{:012x}", h & 0xffff_ffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(ContainerId::new("abc-1.2_3+x").is_ok());
        assert!(ContainerId::new(&"a".repeat(128)).is_ok());
        for bad in ["", "-a", ".a", "a/b", "..", "a b", &"a".repeat(129), "é"] {
            assert!(ContainerId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn network_names() {
        assert!(NetworkName::new("web").is_ok());
        assert!(NetworkName::new("a.b-c_1").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "Web", "-a", &"a".repeat(65)] {
            assert!(NetworkName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ifnames() {
        assert!(IfName::new("eth0").is_ok());
        assert!(IfName::new(&"a".repeat(15)).is_ok());
        let e = IfName::new(&"a".repeat(16)).unwrap_err().to_string();
        assert!(e.contains("16 bytes"), "{e}");
        for bad in ["", ".", "a/b", "a b", "a:b"] {
            assert!(IfName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            Mac::parse("02:42:AC:11:00:02").unwrap().to_string(),
            "02:42:ac:11:00:02"
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "zz:42:ac:11:00:02",
            "01:00:00:00:00:01",
            "00:00:00:00:00:00",
            "02:42:ac:11:00:02:03",
        ] {
            assert!(Mac::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_ifnames_fit_and_differ() {
        let n = NetworkName::new("nethook").unwrap();
        let a = host_ifname(&n, &ContainerId::new("a").unwrap());
        let b = host_ifname(&n, &ContainerId::new("b").unwrap());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 14);
        let other = host_ifname(
            &NetworkName::new("web").unwrap(),
            &ContainerId::new("a").unwrap(),
        );
        assert_ne!(a, other);
    }
}
