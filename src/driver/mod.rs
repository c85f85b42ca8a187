//! Network drivers: how a container's interface on a network is made in the kernel. Each driver
//! does its links only; addresses come from ipam, rules from firewall, files from rootfs.
//! Host and none networks have no driver: they make no links (see ops::attach).

pub mod bridge;
pub mod macvlan;

use crate::config::{DriverKind, Network};
use crate::error::{Error, Result};
use crate::names::NetworkName;
use crate::netlink::route::RouteSocket;
use crate::netns::Netns;
use crate::state::endpoint::Attachment;

/// The namespaces and sockets one attach or detach works with.
pub struct Ctx {
    /// The namespace nethook was started in (the host, or a test's sandbox).
    pub home: Netns,
    pub host: RouteSocket,
    /// The container's namespace and a socket bound to it (absent at poststop).
    pub container: Option<(Netns, RouteSocket)>,
}

impl Ctx {
    /// Sockets for `home` (the current namespace) and, if given, the container's.
    pub fn open(container: Option<Netns>) -> Result<Ctx> {
        Ctx::with(Netns::current()?, RouteSocket::open()?, container)
    }

    /// The same from a home namespace and host socket the caller already has.
    pub fn with(home: Netns, host: RouteSocket, container: Option<Netns>) -> Result<Ctx> {
        let container = match container {
            Some(ns) => {
                let sock = ns.run_in(&home, RouteSocket::open)?;
                Some((ns, sock))
            }
            None => None,
        };
        Ok(Ctx {
            home,
            host,
            container,
        })
    }

    /// The container's namespace and socket, which every setup needs.
    pub fn container(&self, net: &NetworkName) -> Result<(&Netns, &RouteSocket)> {
        self.container.as_ref().map(|(n, s)| (n, s)).ok_or_else(|| {
            Error::invalid(
                format!("container on network {net}"),
                "has no network namespace",
                "give the container one",
            )
        })
    }
}

pub trait Driver {
    /// Make the links of one attachment on the network's host-side link `host_link` (its
    /// index, as the caller just ensured it: the bridge, or the macvlan parent). On error,
    /// whatever this call made is already undone or recorded in `made` for the caller's
    /// rollback.
    fn setup(
        &self,
        ctx: &Ctx,
        net: &Network,
        host_link: u32,
        att: &Attachment,
        default_route: bool,
        made: &mut Vec<Made>,
    ) -> Result<()>;
    /// Remove the links of one attachment; what is already gone is success. `container` is
    /// the container's namespace when it still exists and is known.
    fn teardown(&self, ctx: &Ctx, att: &Attachment) -> Result<()>;
}

/// Kernel objects a setup created, for rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// A host-side link (deleting it removes its veth peer too).
    HostLink(String),
    /// A link inside the container's namespace (a macvlan child).
    ContainerLink(String),
}

pub fn for_kind(kind: DriverKind) -> &'static dyn Driver {
    match kind {
        DriverKind::Macvlan => &macvlan::Macvlan,
        // Config validation refuses overlay; host and none never reach a driver.
        _ => &bridge::Bridge,
    }
}

pub fn for_network(net: &Network) -> &'static dyn Driver {
    for_kind(net.driver)
}

/// The MTU an attachment's interface gets (None: the kernel's default, or the parent's).
pub fn att_mtu(_net: &Network, att: &Attachment) -> Option<u32> {
    att.mtu
}

/// Inside the container, for every driver: lo up, the interface up with its addresses, the
/// default routes when this is the first network.
pub fn configure_inside(
    _ns: &Netns,
    csock: &RouteSocket,
    net: &Network,
    att: &Attachment,
    default_route: bool,
) -> Result<()> {
    csock.set_up_by_name("lo")?;
    let eth = csock.link_by_name(att.interface.as_str())?.ok_or_else(|| {
        Error::kernel(
            format!("interface {} in the container", att.interface),
            "missing after creation",
            "retry",
        )
    })?;
    // No IPv6 autoconfiguration on any network: IPv4-only ones need no IPv6 link-local
    // chatter flooded to every other container, and dual-stack ones get their address and
    // route from nethook (NODAD, so it is usable at once), never from router advertisements.
    csock.disable_ipv6_autoconf(eth.index)?;
    csock.set_up(eth.index)?;
    csock.add_addr4(eth.index, att.ipv4, att.prefix_len)?;
    if let (Some(ip6), Some(p6)) = (att.ipv6, att.prefix_len6) {
        csock.add_addr6(eth.index, ip6, p6)?;
    }
    if default_route && !net.internal {
        csock.add_default_route4(att.gateway, eth.index)?;
        if let Some(gw6) = att.gateway6 {
            csock.add_default_route6(gw6, eth.index)?;
        }
    }
    Ok(())
}
