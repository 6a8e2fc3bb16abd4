//! Classification of addresses (placeholder, being written).
use std::net::IpAddr;

/// The class of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpClass {
    Public,
    Private,
    Loopback,
    LinkLocal,
    Cgnat,
    Documentation,
    Multicast,
    UniqueLocal,
    Unspecified,
    Broadcast,
    Reserved,
}

impl IpClass {
    /// The lowercase name written into events.
    pub fn as_str(self) -> &'static str {
        match self {
            IpClass::Public => "public",
            IpClass::Private => "private",
            IpClass::Loopback => "loopback",
            IpClass::LinkLocal => "link_local",
            IpClass::Cgnat => "cgnat",
            IpClass::Documentation => "documentation",
            IpClass::Multicast => "multicast",
            IpClass::UniqueLocal => "unique_local",
            IpClass::Unspecified => "unspecified",
            IpClass::Broadcast => "broadcast",
            IpClass::Reserved => "reserved",
        }
    }
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> IpClass {
    if ip.is_loopback() {
        IpClass::Loopback
    } else {
        IpClass::Public
    }
}
