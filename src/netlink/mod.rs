//! Every netlink message nethook sends is built in this module. Callers get typed operations:
//! `route` for links, addresses and routes (rtnetlink), `nft` for nftables batches.

pub mod nft;
pub mod route;
