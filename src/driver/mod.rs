//! Network drivers: how a container's interface on a network is made in the kernel. Each driver
//! does its links only; addresses come from ipam, rules from firewall, files from rootfs.

pub mod bridge;

use crate::config::Network;
use crate::error::Result;
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
        let home = Netns::current()?;
        let host = RouteSocket::open()?;
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
}

pub trait Driver {
    /// Make the links of one attachment on the network's host-side link `host_link` (its
    /// index, as the caller just ensured it: the bridge). On error, whatever this call made is
    /// already undone or recorded in `made` for the caller's rollback.
    fn setup(
        &self,
        ctx: &Ctx,
        net: &Network,
        host_link: u32,
        att: &Attachment,
        default_route: bool,
        made: &mut Vec<Made>,
    ) -> Result<()>;
    /// Remove the links of one attachment; what is already gone is success.
    fn teardown(&self, ctx: &Ctx, att: &Attachment) -> Result<()>;
}

/// Kernel objects a setup created, for rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// A host-side link (deleting it removes its veth peer too).
    HostLink(String),
}

pub fn for_network(net: &Network) -> &'static dyn Driver {
    // Config validation refuses the other drivers until they exist.
    let _ = net.driver;
    &bridge::Bridge
}
