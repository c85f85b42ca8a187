//! The overlay data path's kernel objects (flannel's vxlan model): one VXLAN device per overlay
//! network, and per remote host one route (its block via its gateway, onlink), one permanent
//! neighbour (that gateway -> the remote VXLAN MAC) and one FDB entry (that MAC -> the remote
//! VTEP). So a host holds O(hosts) entries, never O(containers).

use super::route::{errno, kernel, RouteSocket};
use crate::error::Result;
use crate::names::Mac;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::AddressFamily;
use rtnetlink::{LinkMessageBuilder, LinkVxlan, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};

/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;

/// A VXLAN device to make.
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub mac: Mac,
    pub mtu: u32,
}

/// One remote host's entries on a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemotePeer {
    /// The remote host's address block.
    pub block: Ipv4Net,
    /// The remote VXLAN device's MAC.
    pub mac: Mac,
    /// The remote VTEP (underlay) address.
    pub vtep: Ipv4Addr,
}

impl Ord for RemotePeer {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.block, self.mac.0, self.vtep).cmp(&(o.block, o.mac.0, o.vtep))
    }
}

impl PartialOrd for RemotePeer {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl RemotePeer {
    /// The onlink next hop for the remote block: its network address (flannel's choice), which
    /// no container ever gets, so it needs no address on any device.
    pub fn gateway(&self) -> Ipv4Addr {
        self.block.network()
    }
}

impl RouteSocket {
    /// Make sure the VXLAN device exists (learning off, the fixed MAC, UDP 4789), is up, and
    /// return its index. An existing device of that name that is not VXLAN is an error.
    pub fn ensure_vxlan(&self, spec: &VxlanSpec<'_>) -> Result<u32> {
        if let Some(l) = self.link_by_name(spec.name)? {
            if l.kind.as_deref() != Some("vxlan") {
                return Err(crate::error::Error::invalid(
                    format!("link {}", spec.name),
                    format!("exists but is a {} link", l.kind.unwrap_or_default()),
                    "remove that link",
                ));
            }
            if !l.up {
                self.set_up(l.index)?;
            }
            return Ok(l.index);
        }
        let msg = LinkMessageBuilder::<LinkVxlan>::new(spec.name)
            .id(spec.vni)
            .local(spec.local)
            .port(VXLAN_PORT)
            .learning(false)
            .address(spec.mac.0.to_vec())
            .mtu(spec.mtu)
            .up()
            .build();
        match self.run(self.handle.link().add(msg).execute()) {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(kernel(format!("creating vxlan device {}", spec.name), &e)),
        }
        self.link_by_name(spec.name)?
            .map(|l| l.index)
            .ok_or_else(|| {
                crate::error::Error::kernel(
                    format!("vxlan device {}", spec.name),
                    "vanished right after creation",
                    "retry",
                )
            })
    }

    /// Program one remote peer on device `index`: FDB, neighbour, then the route (the route is
    /// usable only once the other two are there). Each is a replace: re-running is harmless.
    pub fn add_peer(&self, index: u32, p: &RemotePeer) -> Result<()> {
        let h = self.handle.neighbours();
        let fdb = h
            .add_bridge(index, &p.mac.0)
            .destination(IpAddr::V4(p.vtep))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace();
        self.run(fdb.execute())
            .map_err(|e| kernel(format!("adding fdb {} dst {}", p.mac, p.vtep), &e))?;
        let gw = p.gateway();
        let neigh = h
            .add(index, IpAddr::V4(gw))
            .link_layer_address(&p.mac.0)
            .state(NeighbourState::Permanent)
            .replace();
        self.run(neigh.execute())
            .map_err(|e| kernel(format!("adding neighbour {gw} lladdr {}", p.mac), &e))?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(p.block.network(), p.block.prefix_len())
            .gateway(gw)
            .output_interface(index)
            .onlink()
            .build();
        self.run(self.handle.route().add(route).replace().execute())
            .map_err(|e| kernel(format!("adding route {} via {gw}", p.block), &e))
    }

    /// Remove one remote peer's entries (the FDB entry only with `fdb`: another block of the
    /// same host may use it); what is already gone is success.
    pub fn remove_peer(&self, index: u32, p: &RemotePeer, fdb: bool) -> Result<()> {
        self.remove_route_and_neigh(index, p.block)?;
        if !fdb {
            return Ok(());
        }
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(p.mac.0.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                p.vtep,
            )));
        gone_ok(
            self.run(self.handle.neighbours().del(m).execute()),
            format!("deleting fdb {}", p.mac),
        )
    }

    /// Remove the route to `block` on device `index` and the neighbour of its gateway (for
    /// entries whose MAC and VTEP are no longer known, e.g. left by an earlier agent).
    pub fn remove_route_and_neigh(&self, index: u32, block: Ipv4Net) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(block.network(), block.prefix_len())
            .output_interface(index)
            .build();
        gone_ok(
            self.run(self.handle.route().del(route).execute()),
            format!("deleting route {block}"),
        )?;
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.header.kind = RouteType::Unspec;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                block.network(),
            )));
        gone_ok(
            self.run(self.handle.neighbours().del(m).execute()),
            format!("deleting neighbour {}", block.network()),
        )
    }

    /// The IPv4 routes out of device `index` (the blocks an agent programmed there).
    pub fn routes_via(&self, index: u32) -> Result<Vec<Ipv4Net>> {
        Ok(self
            .routes4()?
            .into_iter()
            .filter(|r| r.oif == Some(index) && r.prefix_len > 0)
            .filter_map(|r| Ipv4Net::new(r.dst, r.prefix_len).ok())
            .collect())
    }

    /// Number of permanent IPv4 neighbours on device `index` (for tests and `check`).
    pub fn neighbour_count(&self, index: u32) -> Result<usize> {
        let req = self.handle.neighbours().get().execute();
        let msgs: Vec<NeighbourMessage> = self
            .run(async move { req.try_collect().await })
            .map_err(|e| kernel("listing neighbours".into(), &e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.family == AddressFamily::Inet)
            .count())
    }
}

fn gone_ok(r: std::result::Result<(), rtnetlink::Error>, what: String) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                errno(&e),
                Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(kernel(what, &e)),
    }
}
