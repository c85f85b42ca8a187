//! Typed rtnetlink operations on one network namespace. A socket opened while the thread is in a
//! namespace stays bound to it after the thread leaves, so the hook opens one socket per
//! namespace and never moves links between them (a move costs ~15 ms here, creation in place ~1 ms).
//!
//! rtnetlink is async; it runs on a current-thread tokio runtime owned by the socket, because a
//! second thread would make later `setns` calls fail for mount namespaces.

use crate::error::{Error, Result};
use crate::names::{IfName, Mac};
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// What nethook needs to know about an existing link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub up: bool,
    pub controller: Option<u32>,
    pub kind: Option<String>,
    pub mtu: Option<u32>,
}

/// An IPv4 address configured on some link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr4 {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub oif: Option<u32>,
}

pub struct RouteSocket {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) handle: Handle,
}

/// The errno of a netlink NACK, if that is what the error is.
pub(super) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

pub(super) fn errno_text(e: &rtnetlink::Error) -> String {
    match errno(e) {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    }
}

pub(super) fn kernel(what: String, e: &rtnetlink::Error) -> Error {
    Error::kernel(
        what,
        errno_text(e),
        "check 'nethook doctor' and the kernel log",
    )
}

impl RouteSocket {
    /// Open a route socket bound to the calling thread's current network namespace.
    pub fn open() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| {
                Error::io(
                    "starting the netlink runtime",
                    e,
                    "check the process limits",
                )
            })?;
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(|e| {
                Error::io(
                    "opening a route netlink socket",
                    e,
                    "run as root (CAP_NET_ADMIN)",
                )
            })?
        };
        rt.spawn(conn);
        Ok(RouteSocket { rt, handle })
    }

    pub(super) fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Look a link up by name; `Ok(None)` if there is none.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let req = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let res: std::result::Result<Option<LinkMessage>, _> = self.run(async move {
            let mut s = Box::pin(req);
            s.try_next().await
        });
        match res {
            Ok(Some(m)) => Ok(Some(link_from(&m))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(kernel(format!("looking up link {name}"), &e)),
        }
    }

    /// Every link of the namespace.
    pub fn links(&self) -> Result<Vec<Link>> {
        let req = self.handle.link().get().execute();
        let msgs: Vec<LinkMessage> = self
            .run(async move { req.try_collect().await })
            .map_err(|e| kernel("listing links".into(), &e))?;
        Ok(msgs.iter().map(link_from).collect())
    }

    /// Create a bridge with a fixed MAC, up, with STP off (the kernel's default) so ports
    /// forward at once.
    pub fn create_bridge(&self, name: &IfName, mac: Mac, mtu: Option<u32>) -> Result<()> {
        let mut b = LinkBridge::new(name.as_str()).address(mac.0.to_vec()).up();
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        let req = self.handle.link().add(b.build());
        match self.run(req.execute()) {
            Ok(()) => Ok(()),
            // Another hook created it between our look-up and now: that is what we wanted.
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(kernel(format!("creating bridge {name}"), &e)),
        }
    }

    /// Make sure a link is up.
    pub fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.run(self.handle.link().set(msg).execute())
            .map_err(|e| kernel(format!("setting link {index} up"), &e))
    }

    /// Turn off IPv6 address autoconfiguration on a link that is still down: no link-local
    /// address, so no DAD, router solicitation or MLD traffic. On an IPv4-only network each new
    /// container otherwise sends dozens of multicast packets that the bridge floods to every
    /// other container (57 per attach measured with 50 on a bridge): a cost that grows with the
    /// number of containers. (The kernel applies IFLA_AF_SPEC after the flags in one request,
    /// so this must be its own request, before the link goes up.)
    pub fn disable_ipv6_autoconf(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        self.run(self.handle.link().set(msg).execute())
            .map_err(|e| {
                kernel(
                    format!("turning off IPv6 autoconfiguration on link {index}"),
                    &e,
                )
            })
    }

    /// Set a link up by name (used for `lo` inside a fresh container namespace).
    pub fn set_up_by_name(&self, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_name(name).up().build();
        self.run(self.handle.link().set(msg).execute())
            .map_err(|e| kernel(format!("setting link {name} up"), &e))
    }

    /// Create a veth pair whose peer is born inside `peer_netns` with its final name, MAC and
    /// (down) state, and whose host side is enslaved to `controller` and up, in one request.
    pub fn create_veth(&self, spec: &VethSpec<'_>) -> Result<()> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.peer_name.as_str().to_string())
            .setns_by_fd(spec.peer_netns.as_raw_fd())
            .address(spec.peer_mac.0.to_vec());
        // The peer cannot be born up: veth_open refuses (ENOTCONN) until the pair is linked,
        // which happens after the peer is configured. The caller sets it up from inside.
        let mut host = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(spec.host_name.as_str().to_string())
            .controller(spec.controller)
            .up();
        if let Some(m) = spec.mtu {
            peer = peer.mtu(m);
            host = host.mtu(m);
        }
        let msg = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        let req = self.handle.link().add(msg);
        self.run(req.execute()).map_err(|e| {
            let why = errno_text(&e);
            if errno(&e) == Some(libc::EEXIST) {
                Error::kernel(
                    format!("creating veth {} / {}", spec.host_name, spec.peer_name),
                    format!("{why}: a link with one of these names exists"),
                    "remove the stale link, or run 'nethook gc'",
                )
            } else {
                kernel(
                    format!("creating veth {} / {}", spec.host_name, spec.peer_name),
                    &e,
                )
            }
        })
    }

    /// Turn hairpin mode on for a bridge port (a container reaching itself via a published port).
    pub fn set_hairpin(&self, index: u32, on: bool) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )]))
            .build();
        // Port (slave) data is only applied by RTM_NEWLINK on an existing link; RTM_SETLINK
        // accepts it and silently ignores it.
        self.run(self.handle.link().set_port(msg).execute())
            .map_err(|e| kernel(format!("setting hairpin on link {index}"), &e))
    }

    /// Add an IPv4 address; an address already there is fine (restore, races).
    pub fn add_addr4(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let req = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len);
        match self.run(req.execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(kernel(
                format!("adding address {addr}/{prefix_len} to link {index}"),
                &e,
            )),
        }
    }

    /// Add an IPv6 address without duplicate address detection (IFA_F_NODAD): nethook's IPAM
    /// already made it unique on the network, and DAD would keep it tentative (unusable) for
    /// about a second after the hook returns. An address already there is fine.
    pub fn add_addr6(&self, index: u32, addr: Ipv6Addr, prefix_len: u8) -> Result<()> {
        use netlink_packet_route::address::AddressFlags;
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V6(addr), prefix_len);
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        match self.run(req.execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(kernel(
                format!("adding address {addr}/{prefix_len} to link {index}"),
                &e,
            )),
        }
    }

    /// Add the IPv6 default route via `gateway` out of `oif`.
    pub fn add_default_route6(&self, gateway: Ipv6Addr, oif: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gateway)
            .output_interface(oif)
            .build();
        let req = self.handle.route().add(msg);
        match self.run(req.execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(kernel(format!("adding default route via {gateway}"), &e)),
        }
    }

    /// Create a macvlan child of `parent` (an index in this socket's namespace) born inside
    /// `netns` with its final name and MAC, down (the caller configures it from inside).
    pub fn create_macvlan(&self, spec: &MacvlanSpec<'_>) -> Result<()> {
        use netlink_packet_route::link::MacVlanMode;
        use rtnetlink::LinkMacVlan;
        let mode = match spec.mode {
            crate::config::MacvlanMode::Bridge => MacVlanMode::Bridge,
            crate::config::MacvlanMode::Private => MacVlanMode::Private,
            crate::config::MacvlanMode::Vepa => MacVlanMode::Vepa,
            crate::config::MacvlanMode::Passthru => MacVlanMode::Passthrough,
        };
        let mut b = LinkMacVlan::new(spec.name.as_str(), spec.parent, mode)
            .setns_by_fd(spec.netns.as_raw_fd());
        // A passthru child takes the parent's MAC; setting one would change the parent's.
        if spec.mode != crate::config::MacvlanMode::Passthru {
            b = b.address(spec.mac.0.to_vec());
        }
        if let Some(m) = spec.mtu {
            b = b.mtu(m);
        }
        let req = self.handle.link().add(b.build());
        self.run(req.execute()).map_err(|e| {
            kernel(
                format!("creating macvlan {} on parent {}", spec.name, spec.parent),
                &e,
            )
        })
    }

    /// The MTU of the interface the IPv4 default route leaves by (netavark's default MTU for
    /// new networks); None without a default route.
    pub fn default_route_mtu(&self) -> Result<Option<u32>> {
        let Some(oif) = self
            .routes4()?
            .into_iter()
            .find(|r| r.prefix_len == 0)
            .and_then(|r| r.oif)
        else {
            return Ok(None);
        };
        Ok(self
            .links()?
            .into_iter()
            .find(|l| l.index == oif)
            .and_then(|l| l.mtu))
    }

    /// Every IPv4 address of the namespace.
    pub fn addrs4(&self) -> Result<Vec<Addr4>> {
        let req = self.handle.address().get().execute();
        let msgs: Vec<_> = self
            .run(async move { req.try_collect::<Vec<_>>().await })
            .map_err(|e| kernel("listing addresses".into(), &e))?;
        let mut out = Vec::new();
        for m in msgs {
            for a in &m.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) = a
                {
                    out.push(Addr4 {
                        index: m.header.index,
                        addr: *ip,
                        prefix_len: m.header.prefix_len,
                    });
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Add the IPv4 default route via `gateway` out of `oif`.
    pub fn add_default_route4(&self, gateway: Ipv4Addr, oif: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(oif)
            .build();
        let req = self.handle.route().add(msg);
        match self.run(req.execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(kernel(format!("adding default route via {gateway}"), &e)),
        }
    }

    /// Unicast IPv4 routes of the main table.
    pub fn routes4(&self) -> Result<Vec<Route4>> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let req = self.handle.route().get(msg).execute();
        let msgs: Vec<_> = self
            .run(async move { req.try_collect::<Vec<_>>().await })
            .map_err(|e| kernel("listing routes".into(), &e))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.kind != RouteType::Unicast || m.header.table != 254 {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            out.push(Route4 {
                dst,
                prefix_len: m.header.destination_prefix_length,
                oif,
            });
        }
        Ok(out)
    }

    /// Delete a link by index; a link already gone is success.
    pub fn delete_link(&self, index: u32) -> Result<()> {
        match self.run(self.handle.link().del(index).execute()) {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::ENODEV) | Some(libc::ENOENT)) => Ok(()),
            Err(e) => Err(kernel(format!("deleting link {index}"), &e)),
        }
    }

    /// Delete a link by name; a link already gone is success. Returns whether one was deleted.
    pub fn delete_link_by_name(&self, name: &str) -> Result<bool> {
        match self.link_by_name(name)? {
            Some(l) => self.delete_link(l.index).map(|_| true),
            None => Ok(false),
        }
    }
}

/// Link kinds `doctor` checks the kernel for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Bridge,
    Veth,
    Vxlan,
    Macvlan,
    Ipvlan,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 5] = [
        ProbeKind::Bridge,
        ProbeKind::Veth,
        ProbeKind::Vxlan,
        ProbeKind::Macvlan,
        ProbeKind::Ipvlan,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Bridge => "bridge",
            ProbeKind::Veth => "veth",
            ProbeKind::Vxlan => "vxlan",
            ProbeKind::Macvlan => "macvlan",
            ProbeKind::Ipvlan => "ipvlan",
        }
    }
}

impl RouteSocket {
    /// Create a throwaway link of `kind` (macvlan and ipvlan on a veth parent), then delete
    /// it: the only sure test that the kernel has the driver. Run it in a scratch namespace.
    pub fn probe_kind(&self, kind: ProbeKind) -> std::result::Result<(), String> {
        use netlink_packet_route::link::{IpVlanMode, MacVlanMode};
        use rtnetlink::{LinkIpVlan, LinkMacVlan, LinkVeth, LinkVxlan};
        let name = format!("nhprobe-{}", kind.name());
        let parent = || -> std::result::Result<u32, String> {
            // A veth as the parent: some kernels (this one) have no dummy driver.
            let req = self
                .handle
                .link()
                .add(LinkVeth::new("nhprobe-parent", "nhprobe-pp").build());
            match self.run(req.execute()) {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(format!("veth parent: {}", errno_text(&e))),
            }
            self.link_by_name("nhprobe-parent")
                .map_err(|e| e.to_string())?
                .map(|l| l.index)
                .ok_or("no parent".to_string())
        };
        let msg = match kind {
            ProbeKind::Bridge => LinkBridge::new(&name).build(),
            ProbeKind::Veth => LinkVeth::new(&name, "nhprobe-peer").build(),
            ProbeKind::Vxlan => LinkVxlan::new(&name, 42).build(),
            ProbeKind::Macvlan => LinkMacVlan::new(&name, parent()?, MacVlanMode::Bridge).build(),
            ProbeKind::Ipvlan => LinkIpVlan::new(&name, parent()?, IpVlanMode::L2).build(),
        };
        let r = self
            .run(self.handle.link().add(msg).execute())
            .map_err(|e| errno_text(&e));
        let _ = self.delete_link_by_name(&name);
        r
    }
}

/// The arguments of `create_macvlan`.
pub struct MacvlanSpec<'a> {
    pub name: &'a IfName,
    pub parent: u32,
    pub mode: crate::config::MacvlanMode,
    pub netns: BorrowedFd<'a>,
    pub mac: Mac,
    pub mtu: Option<u32>,
}

/// The arguments of `create_veth`.
pub struct VethSpec<'a> {
    pub host_name: &'a IfName,
    pub controller: u32,
    pub peer_name: &'a IfName,
    pub peer_netns: BorrowedFd<'a>,
    pub peer_mac: Mac,
    pub mtu: Option<u32>,
}

fn link_from(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        up: m.header.flags.contains(LinkFlags::Up),
        controller: None,
        kind: None,
        mtu: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(b);
                l.mac = Some(Mac(mac));
            }
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::Mtu(m) => l.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}
