//! TEMPORARY STUB (replaced by the real nftables layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddBridge(String),
    RemoveBridge(String),
    AddNet4(ipnet::Ipv4Net),
    RemoveNet4(ipnet::Ipv4Net),
    AddMasq4(std::net::Ipv4Addr),
    ExpireMasq4(std::net::Ipv4Addr),
}
#[derive(thiserror::Error, Debug)]
#[error("nftables: {0}")]
pub struct FirewallError(String);
pub struct Firewall;
impl Firewall {
    pub fn open() -> Result<Self, FirewallError> {
        Ok(Firewall)
    }
    pub fn table_exists(&mut self) -> Result<bool, FirewallError> {
        Ok(true)
    }
    pub fn ensure_base(&mut self) -> Result<bool, FirewallError> {
        Ok(false)
    }
    pub fn apply(&mut self, _c: &[Change]) -> Result<(), FirewallError> {
        Ok(())
    }
    pub fn remove_table(&mut self) -> Result<(), FirewallError> {
        Ok(())
    }
}
