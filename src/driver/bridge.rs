//! The bridge driver: a Linux bridge per network on the host, one veth per container whose peer
//! is created directly inside the container's namespace as its final name.

use super::{Ctx, Driver, Made};
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
    if let Some(l) = host.link_by_name(net.bridge.as_str())? {
        if l.kind.as_deref().is_some_and(|k| k != "bridge") {
            return Err(Error::invalid(
                format!("bridge {} of network {}", net.bridge, net.name),
                format!("exists but is a {} link", l.kind.unwrap_or_default()),
                "remove that link or give the network another --bridge",
            ));
        }
        // Cheap and idempotent: a bridge found without its gateway (restored by hand, or left
        // from an older definition) gets it back.
        let s = net.subnet4();
        host.add_addr4(l.index, s.gateway, s.subnet.prefix_len())?;
        return Ok((l.index, false));
    }
    host.create_bridge(&net.bridge, net.bridge_mac, net.mtu)?;
    let l = host.link_by_name(net.bridge.as_str())?.ok_or_else(|| {
        Error::kernel(
            format!("bridge {}", net.bridge),
            "vanished right after creation",
            "retry",
        )
    })?;
    let s = net.subnet4();
    host.add_addr4(l.index, s.gateway, s.subnet.prefix_len())?;
    Ok((l.index, true))
}

/// What a container with published ports needs beyond its link: hairpin on its bridge port (it
/// may reach itself through the host's address) and route_localnet on the bridge (127.0.0.1 on
/// the host forwards to it), each set only where a port is published.
pub fn prepare_publish(ctx: &Ctx, net: &Network, att: &Attachment) -> Result<()> {
    let port = ctx
        .host
        .link_by_name(att.host_interface.as_str())?
        .ok_or_else(|| {
            Error::kernel(
                format!("host link {}", att.host_interface),
                "vanished during setup",
                "retry",
            )
        })?;
    ctx.host.set_hairpin(port.index, true)?;
    ensure_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge),
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
        let (ns, csock) = ctx.container.as_ref().ok_or_else(|| {
            Error::invalid(
                format!("container on network {}", net.name),
                "has no network namespace",
                "give the container one",
            )
        })?;
        if !net.internal {
            // Routed traffic out of the bridge needs forwarding in the host namespace.
            ensure_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        }
        let spec = VethSpec {
            host_name: &att.host_interface,
            controller: bridge,
            peer_name: &att.interface,
            peer_netns: ns.fd(),
            peer_mac: att.mac,
            mtu: net.mtu,
        };
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
        // A bridge port needs no address of any family. It has no carrier until the peer is up,
        // so IPv6 has not configured it yet.
        ensure_sysctl(
            &format!(
                "/proc/sys/net/ipv6/conf/{}/disable_ipv6",
                att.host_interface
            ),
            "1",
        )?;

        // Inside the container: lo up, the address, the default route.
        csock.set_up_by_name("lo")?;
        let eth = csock.link_by_name(att.interface.as_str())?.ok_or_else(|| {
            Error::kernel(
                format!("interface {} in the container", att.interface),
                "missing after creation",
                "retry",
            )
        })?;
        // IPv4-only networks: no IPv6 link-local chatter flooded to every other container.
        csock.disable_ipv6_autoconf(eth.index)?;
        csock.set_up(eth.index)?;
        csock.add_addr4(eth.index, att.ipv4, att.prefix_len)?;
        if default_route && !net.internal {
            csock.add_default_route4(att.gateway, eth.index)?;
        }
        Ok(())
    }

    fn teardown(&self, ctx: &Ctx, att: &Attachment) -> Result<()> {
        ctx.host
            .delete_link_by_name(att.host_interface.as_str())
            .map(|_| ())
    }
}
