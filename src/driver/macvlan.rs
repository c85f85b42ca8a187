//! The macvlan driver: the container's interface is a macvlan child of the network's parent,
//! born inside the container's namespace with its final name. Its traffic leaves through the
//! parent's wire and never passes the host's IP stack, so there is no host-side link, no
//! masquerade and no published port; and (the kernel's rule) the host itself cannot reach its
//! own macvlan children through the parent.

use super::{Ctx, Driver, Made};
use crate::config::{MacvlanMode, Network};
use crate::error::{Error, Result};
use crate::netlink::route::{MacvlanSpec, RouteSocket};
use crate::state::endpoint::Attachment;

pub struct Macvlan;

/// The parent's index, checked: it exists here and is not one of nethook's bridges.
pub fn parent_index(host: &RouteSocket, net: &Network) -> Result<(u32, Option<u32>)> {
    let parent = net.parent.as_ref().expect("macvlan networks have a parent");
    let l = host.link_by_name(parent.as_str())?.ok_or_else(|| {
        Error::invalid(
            format!("parent {parent} of network {}", net.name),
            "does not exist on this host",
            "create the interface, or recreate the network with an existing --parent",
        )
    })?;
    Ok((l.index, l.mtu))
}

impl Driver for Macvlan {
    fn setup(
        &self,
        ctx: &Ctx,
        net: &Network,
        parent: u32,
        att: &Attachment,
        default_route: bool,
        made: &mut Vec<Made>,
    ) -> Result<()> {
        let (ns, csock) = ctx.container(&net.name)?;
        let spec = MacvlanSpec {
            name: &att.interface,
            parent,
            mode: net.macvlan_mode.unwrap_or(MacvlanMode::Bridge),
            netns: ns.fd(),
            mac: att.mac,
            mtu: att.mtu,
        };
        crate::fault::point("macvlan.before-link");
        ctx.host.create_macvlan(&spec)?;
        made.push(Made::ContainerLink(att.interface.to_string()));
        crate::fault::point("macvlan.link");
        super::configure_inside(ns, csock, net, att, default_route)
    }

    fn teardown(&self, ctx: &Ctx, att: &Attachment) -> Result<()> {
        // The child lives in the container's namespace and goes with it; a namespace that is
        // still there (by-hand detach, network disconnect) has it deleted from inside.
        if let Some((_, csock)) = &ctx.container {
            csock.delete_link_by_name(att.interface.as_str())?;
        }
        Ok(())
    }
}
