//! nethook: container networking for OCI runtimes, as runtime hooks.
//!
//! Data flow (DESIGN.md section 1): `oci` turns the hook's stdin and the bundle into a request;
//! `ops::attach` runs the transaction: `ipam` leases and the `state` record first, then the
//! `driver` makes links through `netlink::route`, `firewall` adds nftables elements through
//! `netlink::nft`, `rootfs` writes the container's /etc files. `ops::detach` undoes it by id.

pub mod cli;
// nethook as a CNI plugin, when CNI_COMMAND is set (issue 10).
pub mod cluster;
pub mod cni;
pub mod config;
// Container DNS: the daemon, its records, upstream forwarding (issue 5).
pub mod dns;
pub mod driver;
pub mod error;
// Fault points for the crash tests (debug builds only).
pub mod fault;
pub mod firewall;
pub mod ipam;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod oci;
pub mod ops;
// Setuid mode: caller checks, the users.conf ACL, the capability drop (issue 7).
pub mod privilege;
pub mod publish;
pub mod rootfs;
pub mod state;
// Per-container tuning: MTU, netns sysctls, offloads, bandwidth limits (issue 6).
pub mod tuning;
