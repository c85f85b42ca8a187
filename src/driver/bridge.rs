//! The bridge driver: a Linux bridge per network on the host, one veth per container whose peer
//! is created directly inside the container's namespace as its final name.

use super::{att_mtu, Ctx, Driver, Made};
use crate::config::Network;
use crate::error::{Error, Result};
use crate::netlink::route::{RouteSocket, VethSpec};
use crate::state::endpoint::Attachment;

pub struct Bridge;

/// Write a sysctl through /proc in the current namespace, only when it differs (a write costs a
/// netdev notifier round in the kernel; a read is cheap).
pub fn ensure_sysctl(path: &str, value: &str) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == value => Ok(()),
        _ => std::fs::write(path, value).map_err(|e| {
            Error::io(
                format!("setting {path} to {value}"),
                e,
                "run as root in the host network namespace",
            )
        }),
    }
}

/// Make sure the network's bridge exists, is up and carries the gateway address; returns its
/// index. Creation is serialised by the caller's network lock.
pub fn ensure_bridge(host: &RouteSocket, net: &Network) -> Result<(u32, bool)> {
    ensure_bridge_with(host, net, || Ok(()))
}

/// [`ensure_bridge`], running `before_create` first when the bridge has to be created.
pub fn ensure_bridge_with(
    host: &RouteSocket,
    net: &Network,
    before_create: impl FnOnce() -> Result<()>,
) -> Result<(u32, bool)> {
    let name = net.bridge_name();
    if let Some(l) = host.link_by_name(name.as_str())? {
        if l.kind.as_deref().is_some_and(|k| k != "bridge") {
            return Err(Error::invalid(
                format!("bridge {name} of network {}", net.name),
                format!("exists but is a {} link", l.kind.unwrap_or_default()),
                "remove that link or give the network another --bridge",
            ));
        }
        // Cheap and idempotent: a bridge found without its gateway (restored by hand, or left
        // from an older definition) gets it back.
        add_gateways(host, l.index, net)?;
        return Ok((l.index, false));
    }
    let mac = net.bridge_mac.expect("bridge networks have a bridge MAC");
    before_create()?;
    host.create_bridge(name, mac, net.mtu)?;
    let l = host.link_by_name(name.as_str())?.ok_or_else(|| {
        Error::kernel(
            format!("bridge {name}"),
            "vanished right after creation",
            "retry",
        )
    })?;
    if net.subnet6().is_none() {
        // The bridge of an IPv4-only network needs no IPv6 at all (no link-local, no MLD).
        ensure_sysctl(&format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1")?;
    } else {
        // Routes come from nethook, never from router advertisements on a container bridge.
        ensure_sysctl(&format!("/proc/sys/net/ipv6/conf/{name}/accept_ra"), "0")?;
    }
    add_gateways(host, l.index, net)?;
    Ok((l.index, true))
}

fn add_gateways(host: &RouteSocket, index: u32, net: &Network) -> Result<()> {
    let s = net.subnet4();
    host.add_addr4(index, s.gateway, s.subnet.prefix_len())?;
    if let Some(s6) = net.subnet6() {
        host.add_addr6(index, s6.gateway, s6.subnet.prefix_len())?;
    }
    Ok(())
}

/// The host-side veth of an attachment this setup just made.
pub fn host_link(ctx: &Ctx, att: &Attachment) -> Result<crate::netlink::route::Link> {
    ctx.host
        .link_by_name(att.host_interface.as_str())?
        .ok_or_else(|| {
            Error::kernel(
                format!("host link {}", att.host_interface),
                "vanished during setup",
                "retry",
            )
        })
}

/// What a container with published ports needs beyond its link: hairpin on its bridge port (it
/// may reach itself through the host's address) and route_localnet on the bridge (127.0.0.1 on
/// the host forwards to it), each set only where a port is published.
pub fn prepare_publish(ctx: &Ctx, net: &Network, att: &Attachment) -> Result<()> {
    let port = host_link(ctx, att)?;
    ctx.host.set_hairpin(port.index, true)?;
    ensure_sysctl(
        &format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            net.bridge_name()
        ),
        "1",
    )
}

impl Driver for Bridge {
    fn setup(
        &self,
        ctx: &Ctx,
        net: &Network,
        bridge: u32,
        att: &Attachment,
        default_route: bool,
        made: &mut Vec<Made>,
    ) -> Result<()> {
        let (ns, csock) = ctx.container(&net.name)?;
        if !net.internal {
            // Routed traffic out of the bridge needs forwarding in the host namespace. (IPv6
            // forwarding turns off accept_ra=1 on the host's interfaces: a host that learns its
            // own IPv6 route from router advertisements needs accept_ra=2 on its uplink.)
            ensure_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
            if net.subnet6().is_some() {
                ensure_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
            }
        }
        let spec = VethSpec {
            host_name: &att.host_interface,
            controller: bridge,
            peer_name: &att.interface,
            peer_netns: ns.fd(),
            peer_mac: att.mac,
            mtu: att_mtu(net, att),
        };
        crate::fault::point("bridge.before-veth");
        if let Err(e) = ctx.host.create_veth(&spec) {
            // The host-side name is derived from (network, id) and the caller holds the
            // container's lock with no record: a link of that name is the previous run of the
            // same id, still going away with its namespace. Remove it and try once more.
            if !ctx.host.delete_link_by_name(att.host_interface.as_str())? {
                return Err(e);
            }
            ctx.host.create_veth(&spec)?;
        }
        made.push(Made::HostLink(att.host_interface.to_string()));
        crate::fault::point("bridge.veth");
        // A bridge port needs no address of any family. It has no carrier until the peer is up,
        // so IPv6 has not configured it yet.
        ensure_sysctl(
            &format!(
                "/proc/sys/net/ipv6/conf/{}/disable_ipv6",
                att.host_interface
            ),
            "1",
        )?;

        super::configure_inside(ns, csock, net, att, default_route)?;
        crate::fault::point("bridge.configured");
        Ok(())
    }

    fn teardown(&self, ctx: &Ctx, att: &Attachment) -> Result<()> {
        ctx.host
            .delete_link_by_name(att.host_interface.as_str())
            .map(|_| ())
    }
}
