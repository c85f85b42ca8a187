//! Every netlink message nethook sends is built in this module. Callers get typed operations:
//! `route` for links, addresses and routes (rtnetlink), `nft` for nftables batches, `tc` for
//! root qdiscs (bandwidth limits), `ethtool` for offloads (SIOCETHTOOL ioctls, not netlink, but
//! the same kind of typed kernel operation).

pub mod ethtool;
pub mod nft;
pub mod route;
pub mod tc;
pub mod vxlan;
