//! What only the agent needs (feature `user`; the eBPF crate never enables it): the map types as
//! `aya::Pod`, and [`Addr`] to and from `std::net::IpAddr`.

extern crate std;

use std::net::IpAddr;

use crate::{
    Addr, CtKey, CtTimeouts, CtValue, EndpointInfo, EventLimit, FlowConfig, FlowEvent, FragKey,
    FragValue, IdentityValue, OriginalKey, OriginalValue, PeerKey, PortKey,
};

// SAFETY: all of these are `bytemuck::Pod` (no padding, every bit pattern valid).
unsafe impl aya::Pod for Addr {}
unsafe impl aya::Pod for EndpointInfo {}
unsafe impl aya::Pod for IdentityValue {}
unsafe impl aya::Pod for PeerKey {}
unsafe impl aya::Pod for PortKey {}
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for CtValue {}
unsafe impl aya::Pod for OriginalKey {}
unsafe impl aya::Pod for OriginalValue {}
unsafe impl aya::Pod for FlowEvent {}
unsafe impl aya::Pod for FlowConfig {}
unsafe impl aya::Pod for EventLimit {}
unsafe impl aya::Pod for CtTimeouts {}
unsafe impl aya::Pod for FragKey {}
unsafe impl aya::Pod for FragValue {}

impl From<IpAddr> for Addr {
    /// IPv4 as IPv4-mapped, as the maps store it.
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::from_v4(v4.octets()),
            IpAddr::V6(v6) => Self::from_v6(v6.octets()),
        }
    }
}

impl Addr {
    /// The address this holds, IPv4-mapped ones as IPv4 (the inverse of `From<IpAddr>`).
    pub fn to_ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::from(self.words[3].to_ne_bytes())
        } else {
            IpAddr::from(self.bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IpAddr;
    use crate::Addr;

    #[test]
    fn addresses_round_trip_and_ipv4_is_mapped() {
        for ip in [
            "10.1.2.3",
            "0.0.0.0",
            "fd00::1",
            "::",
            "::ffff:10.1.2.3",
            "fe80::1",
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            let addr = Addr::from(ip);
            assert_eq!(addr.to_ip(), ip.to_canonical(), "{ip}");
        }
        let addr = Addr::from(IpAddr::from([10, 1, 2, 3]));
        assert_eq!(addr, Addr::from_v4([10, 1, 2, 3]));
        assert!(addr.is_v4());
    }
}
