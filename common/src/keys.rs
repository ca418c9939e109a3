//! What the maps hold: addresses, the reserved identities and endpoint flags, and every key and
//! value layout, with compile-time checks of their sizes (the eBPF side and the agent must agree
//! byte for byte, and a layout change also bumps [`ABI_VERSION`]).

use bytemuck::{Pod, Zeroable};

#[cfg(doc)]
use crate::{
    ABI_VERSION, FLOW_AUDIT, MAP_CIDRS, MAP_CONNTRACK, MAP_ENDPOINTS, MAP_ORIGINAL_DST, MAP_PEERS,
    MAP_POD_IDENTITIES, MAP_PORTS,
};

/// Direction, from the endpoint's point of view.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// No identity: an address that is not a known pod or node.
pub const IDENTITY_UNKNOWN: u32 = 0;
/// The node itself (its own addresses). Ingress from it is always allowed.
pub const IDENTITY_HOST: u32 = 1;
/// First identity handed to pods (label-set identities).
pub const IDENTITY_FIRST_POD: u32 = 256;
/// CIDR classes live in their own half of the identity space, so a pod identity and a CIDR
/// class never share a [`PeerKey`].
pub const IDENTITY_CIDR_FLAG: u32 = 0x8000_0000;

/// [`EndpointInfo::flags`]: ingress is isolated (some policy selects the pod for Ingress).
pub const EP_INGRESS_ISOLATED: u32 = 1 << 0;
/// [`EndpointInfo::flags`]: egress is isolated.
pub const EP_EGRESS_ISOLATED: u32 = 1 << 1;
/// [`EndpointInfo::flags`]: audit mode. A new flow that the endpoint's policy would drop passes
/// (and is tracked) and is reported with [`FLOW_AUDIT`]. Only policy verdicts are audited: a
/// spoofed source, a missing endpoint or an unjudgeable packet is still dropped.
pub const EP_AUDIT: u32 = 1 << 2;

/// A set of port-set classes of one endpoint and direction: bit `c` is class `c`.
pub type ClassMask = u64;

/// An address, IPv4 mapped into IPv6, network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Addr {
    pub bytes: [u8; 16],
}

impl Addr {
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let [a, b, c, d] = octets;
        Self {
            bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d],
        }
    }

    pub const fn from_v6(bytes: [u8; 16]) -> Self {
        Self { bytes }
    }

    pub const fn is_v4(&self) -> bool {
        let b = &self.bytes;
        b[0] == 0
            && b[1] == 0
            && b[2] == 0
            && b[3] == 0
            && b[4] == 0
            && b[5] == 0
            && b[6] == 0
            && b[7] == 0
            && b[8] == 0
            && b[9] == 0
            && b[10] == 0xff
            && b[11] == 0xff
    }
}

/// Bits of an IPv4 prefix length once mapped into the 128-bit space.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// [`MAP_ENDPOINTS`] key: the ifindex of the pod's host-side veth (in the node's netns).
pub type EndpointKey = u32;

/// [`MAP_ENDPOINTS`] value: one local pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct EndpointInfo {
    /// The endpoint id used in [`PeerKey`] and [`PortKey`]; stable for the pod's lifetime.
    pub id: u32,
    /// `EP_*` flags.
    pub flags: u32,
    /// Classes whose rules admit every peer (`from`/`to` empty), by direction.
    pub any_peer: [ClassMask; 2],
    /// Classes whose rules admit every port and protocol (`ports` empty), by direction.
    pub any_port: [ClassMask; 2],
}

/// [`MAP_POD_IDENTITIES`] key is an [`Addr`]; the value the identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct IdentityValue {
    pub identity: u32,
}

/// [`MAP_CIDRS`] is an LPM trie keyed by `(prefix_len, Addr)` with an [`IdentityValue`] whose
/// identity has [`IDENTITY_CIDR_FLAG`] set. Every `cidr` and `except` of every ipBlock is
/// inserted, so the longest match alone determines which ipBlock peers hold an address: for the
/// longest matching prefix P, an address lies in a block B iff P lies inside B.
pub type CidrKeyData = Addr;

/// [`MAP_PEERS`] key. Value: [`ClassMask`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PeerKey {
    pub endpoint: u32,
    /// A pod identity, [`IDENTITY_HOST`], or a CIDR class.
    pub peer: u32,
    pub direction: u8,
    pub _pad: [u8; 3],
}

/// [`MAP_PORTS`] LPM key data (after the 32-bit prefix length). Endpoint, direction and protocol
/// always match in full ([`PORT_KEY_FIXED_BITS`]); the port is big-endian so that a port range
/// is a handful of prefixes over its bits. Value: [`ClassMask`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PortKey {
    pub endpoint: u32,
    pub direction: u8,
    pub protocol: u8,
    pub port_be: [u8; 2],
}

/// Bits of [`PortKey`] before the port.
pub const PORT_KEY_FIXED_BITS: u32 = 48;

/// [`MAP_CONNTRACK`] key: a flow as seen at one hook. `direction` is the hook's policy direction,
/// so the two hooks one pod-to-pod flow crosses on a node keep separate entries. `ifindex` is
/// the endpoint's ([`MAP_ENDPOINTS`] key): the map is shared by every pod of the node, and
/// without it a pod could send a packet matching the reply key of another pod's flow. Both hooks
/// of one veth share the ifindex, so a reply is found where its request was admitted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtKey {
    pub saddr: Addr,
    pub daddr: Addr,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub direction: u8,
    pub _pad: [u8; 2],
    pub ifindex: EndpointKey,
}

/// [`MAP_ORIGINAL_DST`] key: the source side of a flow, which DNAT leaves alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct OriginalKey {
    pub saddr: Addr,
    pub sport: u16,
    pub protocol: u8,
    pub _pad: u8,
}

/// [`MAP_ORIGINAL_DST`] value: where the pod sent the flow, and which endpoint sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct OriginalValue {
    pub daddr: Addr,
    pub dport: u16,
    pub _pad: u16,
    /// [`MAP_ENDPOINTS`] key of the sending pod.
    pub ifindex: u32,
}

/// [`MAP_CONNTRACK`] value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` when the flow was admitted.
    pub created_ns: u64,
    /// The endpoint that admitted it.
    pub endpoint: u32,
    pub _pad: u32,
}

const _: () = {
    assert!(core::mem::size_of::<Addr>() == 16);
    assert!(core::mem::size_of::<EndpointInfo>() == 40);
    assert!(core::mem::size_of::<IdentityValue>() == 4);
    assert!(core::mem::size_of::<PeerKey>() == 12);
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::offset_of!(PortKey, port_be) * 8 == PORT_KEY_FIXED_BITS as usize);
    assert!(core::mem::size_of::<CtKey>() == 44);
    assert!(core::mem::offset_of!(CtKey, sport) == 32);
    assert!(core::mem::offset_of!(CtKey, ifindex) == 40);
    assert!(core::mem::size_of::<CtValue>() == 16);
    assert!(core::mem::size_of::<OriginalKey>() == 20);
    assert!(core::mem::size_of::<OriginalValue>() == 24);
    assert!(crate::MAX_CLASSES == ClassMask::BITS as usize);
};
