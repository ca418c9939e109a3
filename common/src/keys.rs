//! What the maps hold: addresses, the reserved identities and endpoint flags, and every key and
//! value layout, with compile-time checks of their sizes (the eBPF side and the agent must agree
//! byte for byte, and a layout change also bumps [`ABI_VERSION`]).

use bytemuck::{Pod, Zeroable};

#[cfg(doc)]
use crate::{
    ABI_VERSION, FLOW_AUDIT, MAP_CIDRS, MAP_CONNTRACK, MAP_CT_CONFIG, MAP_ENDPOINTS, MAP_FRAGMENTS,
    MAP_ORIGINAL_DST, MAP_PEERS, MAP_POD_IDENTITIES, MAP_PORTS,
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
/// [`EndpointInfo::flags`]: some ClusterNetworkPolicy rule (Admin or Baseline tier) applies to
/// the endpoint's ingress ([`EndpointInfo::admin`], [`EndpointInfo::baseline`]).
pub const EP_INGRESS_TIERED: u32 = 1 << 3;
/// [`EndpointInfo::flags`]: some ClusterNetworkPolicy rule applies to the endpoint's egress.
pub const EP_EGRESS_TIERED: u32 = 1 << 4;

/// A set of port-set classes of one endpoint and direction: bit `c` is class `c`.
pub type ClassMask = u64;

/// An address, IPv4 mapped into IPv6, network byte order: sixteen bytes held as four 32-bit
/// words, so that the programs copy and compare it a word at a time (byte-aligned copies
/// become a load and a store per byte in BPF). Ordered by its bytes.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Addr {
    /// The bytes in memory order (`u32::from_ne_bytes` of each four).
    pub words: [u32; 4],
}

/// The third word of an IPv4-mapped address (`::ffff:0:0/96`).
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

impl Addr {
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        Self {
            words: [0, 0, V4_MAPPED_WORD, u32::from_ne_bytes(octets)],
        }
    }

    pub const fn from_v6(bytes: [u8; 16]) -> Self {
        let b = bytes;
        Self {
            words: [
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
                u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
            ],
        }
    }

    /// The sixteen bytes.
    pub const fn bytes(&self) -> [u8; 16] {
        let [a, b, c, d] = [
            self.words[0].to_ne_bytes(),
            self.words[1].to_ne_bytes(),
            self.words[2].to_ne_bytes(),
            self.words[3].to_ne_bytes(),
        ];
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    }

    /// The first two bytes (what scopes are told by).
    pub const fn prefix16(&self) -> [u8; 2] {
        let a = self.words[0].to_ne_bytes();
        [a[0], a[1]]
    }

    pub const fn is_v4(&self) -> bool {
        self.words[0] == 0 && self.words[1] == 0 && self.words[2] == V4_MAPPED_WORD
    }
}

impl PartialOrd for Addr {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Addr {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.bytes().cmp(&other.bytes())
    }
}

impl core::fmt::Debug for Addr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Addr")
            .field("bytes", &self.bytes())
            .finish()
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
    /// Classes of ClusterNetworkPolicy rules of the Admin tier, by direction: the lowest bits,
    /// numbered in the order the rules are tried (see `precedence`).
    pub admin: [ClassMask; 2],
    /// Classes of Baseline tier rules, by direction: the highest bits in use, in order.
    pub baseline: [ClassMask; 2],
    /// Of the tier classes, those whose rules `Deny`, by direction.
    pub deny: [ClassMask; 2],
    /// Of the tier classes, those whose rules `Pass`, by direction (a tier class in neither
    /// `deny` nor `pass` is an `Accept`).
    pub pass: [ClassMask; 2],
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

impl PeerKey {
    /// The key of `peer`'s classes at endpoint id `endpoint` in `direction`.
    ///
    /// Built as three words: the programs' compiler turned the three padding bytes of a
    /// struct literal into a call to `memset`, a byte loop in BPF.
    #[inline(always)]
    pub fn new(endpoint: u32, peer: u32, direction: u8) -> Self {
        bytemuck::cast([endpoint, peer, u32::from_ne_bytes([direction, 0, 0, 0])])
    }
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

/// [`MAP_CONNTRACK`] key: a flow at one endpoint, the same for its packets both ways. The
/// endpoint's own side comes first (`local`: the destination of what it receives, the source of
/// what it sends), so a packet and its reply, seen by the two hooks of one veth, build one key
/// and one lookup finds either ([`CtKey::of`]); which way the flow was opened is in the value
/// ([`CtValue::direction`]). `ifindex` is the endpoint's ([`MAP_ENDPOINTS`] key): the map is
/// shared by every pod of the node, and without it a pod could send a packet matching the key
/// of another pod's flow; the two endpoints one pod-to-pod flow crosses on a node keep separate
/// entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtKey {
    pub local: Addr,
    pub remote: Addr,
    pub local_port: u16,
    pub remote_port: u16,
    pub protocol: u8,
    /// What the ports mean for ICMP ([`CT_KIND_PLAIN`] for TCP, UDP and SCTP), as the
    /// endpoint's egress hook sees the message (what it receives, turned around:
    /// [`ct_kind_turned`]). An echo request and its reply then build one key, and an echo
    /// request the other way (same identifier) another.
    pub kind: u8,
    pub _pad: [u8; 2],
    pub ifindex: EndpointKey,
}

impl CtKey {
    /// The key of a packet from `src`:`sport` to `dst`:`dport` of `protocol` and `kind`
    /// (`CT_KIND_*`), seen by the hook of endpoint `ifindex` in `direction` (`DIR_*`).
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of a packet, as the callers hold them"
    )]
    #[inline(always)]
    pub const fn of(
        src: Addr,
        dst: Addr,
        sport: u16,
        dport: u16,
        protocol: u8,
        kind: u8,
        direction: u8,
        ifindex: EndpointKey,
    ) -> Self {
        let (local, remote) = if direction == crate::DIR_EGRESS {
            (src, dst)
        } else {
            (dst, src)
        };
        let (local_port, remote_port, kind) = ct_sides(sport, dport, kind, direction);
        Self {
            local,
            remote,
            local_port,
            remote_port,
            protocol,
            kind,
            _pad: [0; 2],
            ifindex,
        }
    }

    /// The flow's first packet as `(src, dst, sport, dport)`, it having gone in `direction`
    /// ([`CtValue::direction`]): the inverse of [`CtKey::of`].
    pub const fn opening(&self, direction: u8) -> (Addr, Addr, u16, u16) {
        if direction == crate::DIR_EGRESS {
            (self.local, self.remote, self.local_port, self.remote_port)
        } else {
            (self.remote, self.local, self.remote_port, self.local_port)
        }
    }
}

/// [`CtKey::kind`]: ports are ports.
pub const CT_KIND_PLAIN: u8 = 0;
/// [`CtKey::kind`]: an ICMP echo request, `sport` its identifier, `dport` 0.
pub const CT_KIND_ECHO_REQUEST: u8 = 1;
/// [`CtKey::kind`]: an ICMP echo reply, `sport` 0, `dport` its identifier: turned around (the
/// addresses, the ports and the kind) it is its request.
pub const CT_KIND_ECHO_REPLY: u8 = 2;
/// [`CtKey::kind`]: another ICMP message that is not an error, `sport` its type, `dport` its
/// code. Turned around it becomes [`CT_KIND_ICMP_OTHER_TURNED`], which no packet carries: such
/// messages are tracked in their own direction only and never answer for each other.
pub const CT_KIND_ICMP_OTHER: u8 = 3;
pub const CT_KIND_ICMP_OTHER_TURNED: u8 = 4;

/// The endpoint's side of a packet's ports and kind, as [`CtKey::of`] keys them:
/// `(local_port, remote_port, kind)` for a packet from port `sport` to port `dport` of `kind`
/// seen going `direction` (`DIR_*`).
#[inline(always)]
pub const fn ct_sides(sport: u16, dport: u16, kind: u8, direction: u8) -> (u16, u16, u8) {
    if direction == crate::DIR_EGRESS {
        (sport, dport, kind)
    } else {
        (dport, sport, ct_kind_turned(kind))
    }
}

/// The kind of the reply to a flow of kind `kind` ([`CtKey::kind`]).
pub const fn ct_kind_turned(kind: u8) -> u8 {
    match kind {
        CT_KIND_ECHO_REQUEST => CT_KIND_ECHO_REPLY,
        CT_KIND_ECHO_REPLY => CT_KIND_ECHO_REQUEST,
        CT_KIND_ICMP_OTHER => CT_KIND_ICMP_OTHER_TURNED,
        CT_KIND_ICMP_OTHER_TURNED => CT_KIND_ICMP_OTHER,
        other => other,
    }
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
    /// The TCP flags of the recorded packet (0 for other protocols).
    pub tcp_flags: u8,
    /// Non-zero when another packet of the same source port went to another Service address
    /// while this record waited: the translated packet that comes back cannot be told apart
    /// from the other one, so neither is judged by the record (both are dropped; the client
    /// retries).
    pub contended: u8,
    /// [`MAP_ENDPOINTS`] key of the sending pod.
    pub ifindex: u32,
    /// `bpf_ktime_get_coarse_ns()` when the packet was recorded.
    pub recorded_ns: u64,
}

/// [`MAP_CONNTRACK`] value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CtValue {
    /// `bpf_ktime_get_coarse_ns()` when the flow was admitted.
    pub created_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` when a packet of the flow (either way) was last seen, to within
    /// [`CT_SEEN_GRANULARITY_NS`]: the entry expires [`CtTimeouts`] after it.
    pub seen_ns: u64,
    /// The endpoint that admitted it.
    pub endpoint: u32,
    /// A `CT_TCP_*` state for TCP; [`CT_TCP_NONE`] for other protocols.
    pub tcp: u8,
    /// The direction (`DIR_*`) of the packet that opened the flow: a packet going the same
    /// way is the flow's, one going the other way its reply.
    pub direction: u8,
    /// `CT_F_*` bits.
    pub flags: u8,
    pub _pad: u8,
}

/// [`CtValue::flags`]: the key's local address is one of the endpoint's own
/// (`MAP_LOCAL_ADDRS`), checked when the pod's egress admitted the flow (step 3), or by the
/// first packet the pod sent on a flow its ingress admitted (the programs set the bit then):
/// the endpoint's packets of the flow need no source check of their own (step 3 of the
/// precedence). Without it (a flow opened towards an address that is not the pod's, or not
/// answered yet), every packet the pod sends on it is checked.
pub const CT_F_LOCAL_OWN: u8 = 1 << 0;

/// [`CtValue::tcp`]: not TCP.
pub const CT_TCP_NONE: u8 = 0;
/// [`CtValue::tcp`]: opened by a SYN, no reply seen yet.
pub const CT_TCP_SYN_SENT: u8 = 1;
/// [`CtValue::tcp`]: a packet went each way (or the flow was picked up mid-stream).
pub const CT_TCP_ESTABLISHED: u8 = 2;
/// [`CtValue::tcp`]: a FIN or RST was seen. A SYN is judged as a new connection in every
/// state; this one only shortens the entry's life.
pub const CT_TCP_CLOSING: u8 = 3;

/// [`CtValue::seen_ns`] is rewritten only when it is older than this: an established flow's
/// packets read their entry and write it at most once a second.
pub const CT_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// [`MAP_CT_CONFIG`] value: how long an idle flow stays tracked, by state, in nanoseconds
/// (written by the agent; zero means the default). The defaults follow Cilium's (TCP SYN 60 s,
/// closing 10 s, non-TCP 60 s) and the kernel's (ICMP 30 s); established TCP is Cilium's 6 h.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CtTimeouts {
    pub tcp_syn_ns: u64,
    pub tcp_established_ns: u64,
    pub tcp_closing_ns: u64,
    /// UDP, SCTP and every other protocol with ports.
    pub other_ns: u64,
    pub icmp_ns: u64,
}

const SECOND_NS: u64 = 1_000_000_000;

impl CtTimeouts {
    pub const DEFAULT: Self = Self {
        tcp_syn_ns: 60 * SECOND_NS,
        tcp_established_ns: 6 * 3600 * SECOND_NS,
        tcp_closing_ns: 10 * SECOND_NS,
        other_ns: 60 * SECOND_NS,
        icmp_ns: 30 * SECOND_NS,
    };

    /// How long an entry of `protocol` in TCP state `tcp` lives idle (zero settings read as
    /// the default, so programs running before the agent wrote its settings still expire).
    pub const fn lifetime_ns(&self, protocol: u8, tcp: u8) -> u64 {
        let (set, default) = match (protocol, tcp) {
            (crate::PROTO_TCP, CT_TCP_SYN_SENT) => (self.tcp_syn_ns, Self::DEFAULT.tcp_syn_ns),
            (crate::PROTO_TCP, CT_TCP_CLOSING) => {
                (self.tcp_closing_ns, Self::DEFAULT.tcp_closing_ns)
            }
            (crate::PROTO_TCP, _) => (self.tcp_established_ns, Self::DEFAULT.tcp_established_ns),
            (crate::PROTO_ICMP | crate::PROTO_ICMPV6, _) => (self.icmp_ns, Self::DEFAULT.icmp_ns),
            _ => (self.other_ns, Self::DEFAULT.other_ns),
        };
        if set == 0 { default } else { set }
    }
}

impl Default for CtTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl CtValue {
    /// Whether the flow keyed with `protocol` has been idle past its lifetime at `now_ns`. A
    /// clock read before `seen_ns` (another CPU wrote it meanwhile) is no expiry.
    pub const fn expired(&self, protocol: u8, now_ns: u64, timeouts: &CtTimeouts) -> bool {
        self.idle_past(now_ns, timeouts.lifetime_ns(protocol, self.tcp))
    }

    /// Whether the flow has been idle longer than `lifetime_ns` at `now_ns` ([`Self::expired`]
    /// with the lifetime already known).
    pub const fn idle_past(&self, now_ns: u64, lifetime_ns: u64) -> bool {
        now_ns > self.seen_ns && now_ns - self.seen_ns > lifetime_ns
    }
}

/// The TCP state a flow admitted by a packet with `flags` starts in: a SYN opens it, a FIN or
/// RST closes it, anything else picks up a connection mid-stream (after a restart that lost
/// conntrack, or one opened before the endpoint was known).
pub const fn tcp_state_of_new(flags: u8) -> u8 {
    if flags & (TCP_FIN | TCP_RST) != 0 {
        CT_TCP_CLOSING
    } else if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        CT_TCP_SYN_SENT
    } else {
        CT_TCP_ESTABLISHED
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Whether TCP `flags` open a connection: SYN without ACK. Such a packet is always judged by
/// policy, whatever conntrack holds for its 5-tuple (a closed or stale connection is never
/// resurrected by a new one reusing its ports).
pub const fn tcp_opens(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
}

/// [`MAP_FRAGMENTS`] key: one IP datagram, as its fragments all carry it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragKey {
    pub saddr: Addr,
    pub daddr: Addr,
    /// The IPv4 identification (16 bits) or IPv6 fragment identification (32 bits).
    pub id: u32,
    pub protocol: u8,
    pub direction: u8,
    pub _pad: [u8; 2],
    pub ifindex: EndpointKey,
}

/// [`MAP_FRAGMENTS`] value: when the datagram's first fragment passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FragValue {
    pub first_ns: u64,
}

/// How long after its first fragment a datagram's later fragments pass. The kernel's
/// reassembly waits 30 s (`ipfrag_time`); fragments of one datagram leave a sender together, so
/// a second is ample on a cluster network and leaves a replayed identifier little room.
pub const FRAGMENT_LIFETIME_NS: u64 = 1_000_000_000;

/// The default mark bit [`PROG_FROM_POD`](crate::PROG_FROM_POD) sets on a packet it leaves to
/// be judged after kube-proxy's translation ([`MAP_ORIGINAL_DST`]); only a packet carrying it
/// is judged by the record, so no other packet can consume (or plant) a record for its source
/// port. A pod cannot set it: the kernel clears `skb->mark` when a packet crosses network
/// namespaces. The bit must be one no other component on the node sets: by default bit 12,
/// outside kube-proxy's (0xc000), Calico's (0xffff0000), Cilium's (0x0f00 and the upper half),
/// the AWS VPC CNI's (0x80) and Talos's (0x60); the agent's `--service-mark` picks another
/// ([`GLOBAL_SERVICE_MARK`]).
pub const SERVICE_MARK: u32 = 0x0000_1000;

/// The programs' global holding the Service mark bit, set at load time (read-only data: the
/// verifier sees a constant, so it costs nothing per packet).
pub const GLOBAL_SERVICE_MARK: &str = "PAL_SERVICE_MARK";

/// How long a Service record waits for its translated packet ([`MAP_ORIGINAL_DST`]): the
/// translation happens in the same pass through the node's stack, so a record older than this
/// belongs to a packet that was never delivered.
pub const ORIGINAL_DST_LIFETIME_NS: u64 = 1_000_000_000;

const _: () = {
    assert!(core::mem::size_of::<Addr>() == 16);
    assert!(core::mem::size_of::<EndpointInfo>() == 104);
    assert!(core::mem::size_of::<IdentityValue>() == 4);
    assert!(core::mem::size_of::<PeerKey>() == 12);
    assert!(core::mem::size_of::<PortKey>() == 8);
    assert!(core::mem::offset_of!(PortKey, port_be) * 8 == PORT_KEY_FIXED_BITS as usize);
    assert!(core::mem::size_of::<CtKey>() == 44);
    assert!(core::mem::offset_of!(CtKey, local_port) == 32);
    assert!(core::mem::offset_of!(CtKey, ifindex) == 40);
    assert!(core::mem::size_of::<CtValue>() == 24);
    assert!(core::mem::size_of::<CtTimeouts>() == 40);
    assert!(core::mem::size_of::<FragKey>() == 44);
    assert!(core::mem::size_of::<FragValue>() == 8);
    assert!(core::mem::size_of::<OriginalKey>() == 20);
    assert!(core::mem::size_of::<OriginalValue>() == 32);
    assert!(crate::MAX_CLASSES == ClassMask::BITS as usize);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PROTO_ICMP, PROTO_TCP};

    const POD: Addr = Addr::from_v4([10, 244, 0, 2]);
    const PEER: Addr = Addr::from_v4([10, 244, 1, 2]);

    #[test]
    fn a_packet_and_its_reply_build_one_key() {
        let sent = CtKey::of(
            POD,
            PEER,
            40_000,
            80,
            PROTO_TCP,
            CT_KIND_PLAIN,
            DIR_EGRESS,
            7,
        );
        let reply = CtKey::of(
            PEER,
            POD,
            80,
            40_000,
            PROTO_TCP,
            CT_KIND_PLAIN,
            DIR_INGRESS,
            7,
        );
        assert_eq!(sent, reply);
        assert_eq!(sent.opening(DIR_EGRESS), (POD, PEER, 40_000, 80));
        assert_eq!(reply.opening(DIR_INGRESS), (PEER, POD, 80, 40_000));
        // Another endpoint, or the same ports the wrong way round, is another flow.
        let elsewhere = CtKey::of(
            PEER,
            POD,
            80,
            40_000,
            PROTO_TCP,
            CT_KIND_PLAIN,
            DIR_INGRESS,
            8,
        );
        assert_ne!(sent, elsewhere);
        let swapped = CtKey::of(
            PEER,
            POD,
            40_000,
            80,
            PROTO_TCP,
            CT_KIND_PLAIN,
            DIR_INGRESS,
            7,
        );
        assert_ne!(sent, swapped);
    }

    #[test]
    fn an_echo_reply_finds_its_request_and_a_request_never_does() {
        let (e, i) = (DIR_EGRESS, DIR_INGRESS);
        // The pod pings the peer with identifier 7 (a request carries it as its source port).
        let ping = CtKey::of(POD, PEER, 7, 0, PROTO_ICMP, CT_KIND_ECHO_REQUEST, e, 1);
        let pong = CtKey::of(PEER, POD, 0, 7, PROTO_ICMP, CT_KIND_ECHO_REPLY, i, 1);
        assert_eq!(ping, pong);
        // The peer's own request with that identifier, or with identifier 0, is not the reply.
        for id in [7, 0] {
            let request = CtKey::of(PEER, POD, id, 0, PROTO_ICMP, CT_KIND_ECHO_REQUEST, i, 1);
            assert_ne!(ping, request, "identifier {id}");
        }
        let zero = CtKey::of(POD, PEER, 0, 0, PROTO_ICMP, CT_KIND_ECHO_REQUEST, e, 1);
        let back = CtKey::of(PEER, POD, 0, 0, PROTO_ICMP, CT_KIND_ECHO_REQUEST, i, 1);
        assert_ne!(zero, back);
        // Other ICMP is never found the other way, whatever its type and code.
        let other = CtKey::of(POD, PEER, 3, 3, PROTO_ICMP, CT_KIND_ICMP_OTHER, e, 1);
        let mirrored = CtKey::of(PEER, POD, 3, 3, PROTO_ICMP, CT_KIND_ICMP_OTHER, i, 1);
        assert_ne!(other, mirrored);
    }
}
