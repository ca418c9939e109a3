//! Packet parsing: Ethernet, IPv4 or IPv6, and the first four bytes of TCP, UDP or SCTP (their
//! ports sit at the same offsets). Reads go through `bpf_skb_load_bytes`, so a short packet is an
//! error, never an out-of-bounds read.

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::TcContext};
use palisade_common::{
    Addr, CT_KIND_ECHO_REPLY, CT_KIND_ECHO_REQUEST, CT_KIND_ICMP_OTHER, CT_KIND_PLAIN, DIR_EGRESS,
    DropReason, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, V4_MAPPED_WORD,
};

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;
pub(crate) const IPV6_HLEN: usize = 40;
pub(crate) const IPV6_FRAGMENT: u8 = 44;
const IPV6_FRAGMENT_HLEN: usize = 8;

/// What a verdict needs from one packet.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Packet {
    pub src: Addr,
    pub dst: Addr,
    /// The endpoint's side and the other side: the destination and the source of what the pod
    /// receives, the source and the destination of what it sends (conntrack's key, `CtKey`).
    pub local: Addr,
    pub remote: Addr,
    pub protocol: u8,
    /// Host byte order; 0 for protocols without ports. For ICMP what conntrack keys the message
    /// by (see `kind`).
    pub sport: u16,
    pub dport: u16,
    /// The conntrack key's `kind` (`CT_KIND_*`): what the ports mean.
    pub kind: u8,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// A non-first fragment: no L4 header, so no ports to judge.
    pub fragment: bool,
    /// The first fragment of a fragmented datagram (offset 0, more fragments follow).
    pub first_fragment: bool,
    /// The datagram's identification (IPv4's 16 bits, or the IPv6 fragment header's 32), for
    /// fragments.
    pub frag_id: u32,
    /// IPv6 with extension headers, which this version does not walk.
    pub ext_headers: bool,
    /// ICMPv6 neighbour discovery (types 133-137), which always passes.
    pub neighbour_discovery: bool,
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, DropReason> {
    ctx.load::<T>(offset).map_err(|_| DropReason::Malformed)
}

/// The per-CPU [`PACKET`] slot the programs parse into rather than into their frames (the
/// verdict's is near the 512-byte stack limit). `None` never happens for index 0 of a one-slot
/// array; callers drop rather than pass if it does.
#[inline(always)]
pub(crate) fn packet_slot() -> Option<&'static mut Packet> {
    // SAFETY: this CPU's slot; TC programs do not nest on one CPU, so nothing else uses it
    // while this program runs.
    PACKET.get_ptr_mut(0).map(|slot| unsafe { &mut *slot })
}

/// Parses the packet into `out`: `Ok(false)` for packets that are not IP (ARP and friends pass
/// untouched). A plain answer, not the packet: LLVM folds a `Result` holding a map pointer into
/// shifts of the pointer, which the verifier refuses.
///
/// `direction` is the hook's (`DIR_*`): which address is the endpoint's ([`Packet::local`]).
#[inline(always)]
pub(crate) fn parse_into(
    ctx: &TcContext,
    out: &mut Packet,
    direction: u8,
) -> Result<bool, DropReason> {
    if !parse_direct(ctx, out) {
        let ethertype = u16::from_be(load::<u16>(ctx, 12)?);
        match ethertype {
            ETH_P_IP => *out = parse_v4(ctx)?,
            ETH_P_IPV6 => *out = parse_v6(ctx)?,
            _ => return Ok(false),
        }
    }
    set_sides(out, direction == DIR_EGRESS);
    Ok(true)
}

/// [`Packet::local`] and [`Packet::remote`], a word at a time (a copy of a whole address chosen
/// by a branch became `memmove`, a byte loop in BPF).
#[inline(always)]
fn set_sides(out: &mut Packet, egress: bool) {
    for i in 0..4 {
        let (local, remote) = if egress {
            (out.src.words[i], out.dst.words[i])
        } else {
            (out.dst.words[i], out.src.words[i])
        };
        out.local.words[i] = local;
        out.remote.words[i] = remote;
    }
}

/// The common case read straight from the packet's linear data, without a helper call per
/// field: IPv4 without options and unfragmented, or IPv6 without extension headers, carrying
/// TCP, UDP or SCTP, with the headers in the linear part. Anything else (ICMP, fragments, IPv4
/// options, IPv6 extension headers, a short or non-linear buffer) answers `false` and is read
/// by the general parse below, which checks what this one does not need to.
///
/// Addresses are read as four 32-bit words (`Addr` holds them so), never byte by byte: what
/// the compiler makes of byte-aligned copies in BPF (a load and a store per byte, `memset` and
/// `memmove` as loops) once cost more than the lookups. Every field of `out` is written: the
/// slot holds the previous packet's.
#[inline(always)]
fn parse_direct(ctx: &TcContext, out: &mut Packet) -> bool {
    let start = ctx.data();
    let end = ctx.data_end();
    // The Ethernet header and the smaller IP header, before reading either.
    if start + ETH_HLEN + 20 > end {
        return false;
    }
    // SAFETY (every `read` below): within [start, end), checked before it in a way the
    // verifier follows.
    let ethertype = unsafe { read::<u16>(start + 12) };
    let (l4, protocol) = if ethertype == ETH_P_IP.to_be() {
        let (version_ihl, frag, protocol) = unsafe {
            (
                read::<u8>(start + ETH_HLEN),
                read::<u16>(start + ETH_HLEN + 6),
                read::<u8>(start + ETH_HLEN + 9),
            )
        };
        // No options, not a fragment (neither more fragments nor an offset).
        if version_ihl != 0x45 || frag & 0x3fff_u16.to_be() != 0 {
            return false;
        }
        let (src, dst) = unsafe {
            (
                read::<u32>(start + ETH_HLEN + 12),
                read::<u32>(start + ETH_HLEN + 16),
            )
        };
        out.src = Addr {
            words: [0, 0, V4_MAPPED_WORD, src],
        };
        out.dst = Addr {
            words: [0, 0, V4_MAPPED_WORD, dst],
        };
        (start + ETH_HLEN + 20, protocol)
    } else if ethertype == ETH_P_IPV6.to_be() {
        if start + ETH_HLEN + IPV6_HLEN > end {
            return false;
        }
        let at = start + ETH_HLEN;
        let (version, protocol) = unsafe { (read::<u8>(at) >> 4, read::<u8>(at + 6)) };
        let src = unsafe { [0, 4, 8, 12].map(|i| read::<u32>(at + 8 + i)) };
        let dst = unsafe { [0, 4, 8, 12].map(|i| read::<u32>(at + 24 + i)) };
        // IPv4-mapped addresses are the general parse's to refuse.
        let (src, dst) = (Addr { words: src }, Addr { words: dst });
        if version != 6 || src.is_v4() || dst.is_v4() {
            return false;
        }
        out.src = src;
        out.dst = dst;
        (at + IPV6_HLEN, protocol)
    } else {
        return false;
    };
    let tcp_flags = match protocol {
        PROTO_TCP => {
            if l4 + 14 > end {
                return false;
            }
            unsafe { read::<u8>(l4 + 13) }
        }
        PROTO_UDP | PROTO_SCTP => {
            if l4 + 4 > end {
                return false;
            }
            0
        }
        _ => return false,
    };
    // The ports' four bytes are within the bounds checked for the protocol.
    let (sport, dport) = unsafe { (read::<u16>(l4), read::<u16>(l4 + 2)) };
    out.protocol = protocol;
    out.sport = u16::from_be(sport);
    out.dport = u16::from_be(dport);
    out.kind = CT_KIND_PLAIN;
    out.tcp_flags = tcp_flags;
    out.fragment = false;
    out.first_fragment = false;
    out.frag_id = 0;
    out.ext_headers = false;
    out.neighbour_discovery = false;
    true
}

/// A copy of `addr`, made a word at a time. LLVM turns a copy of an address it cannot prove
/// distinct from the destination into `memmove`, which BPF has only as a byte loop (a call and
/// sixteen loads and stores); four volatile loads stay four loads.
#[inline(always)]
pub(crate) fn copied(addr: &Addr) -> Addr {
    // SAFETY: each word of a live, aligned `Addr`.
    let word = |i: usize| unsafe { core::ptr::read_volatile(&addr.words[i]) };
    Addr {
        words: [word(0), word(1), word(2), word(3)],
    }
}

/// Reads a `T` at packet address `at`, in one load of its width.
///
/// # Safety
/// `at..at + size_of::<T>()` lies within the packet's linear data (checked against
/// `data_end` by the caller, in a way the verifier can follow). The load assumes `T`'s
/// alignment, as C programs reading header structs do: packet headers sit at their natural
/// alignment behind the 2-byte pad drivers leave before the Ethernet header, and the verifier
/// allows a misaligned packet load only where the CPU does it natively (x86-64, arm64).
#[inline(always)]
unsafe fn read<T: Copy>(at: usize) -> T {
    // SAFETY: the caller's.
    unsafe { core::ptr::read(at as *const T) }
}

/// The verdict's packet, per CPU ([`parse_to_slot`]).
#[map(name = "PAL_PACKET")]
static PACKET: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn parse_v4(ctx: &TcContext) -> Result<Packet, DropReason> {
    let version_ihl = load::<u8>(ctx, ETH_HLEN)?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Err(DropReason::Malformed);
    }
    let id = u16::from_be(load::<u16>(ctx, ETH_HLEN + 4)?);
    let frag = u16::from_be(load::<u16>(ctx, ETH_HLEN + 6)?);
    let protocol = load::<u8>(ctx, ETH_HLEN + 9)?;
    let src = Addr::from_v4(load::<[u8; 4]>(ctx, ETH_HLEN + 12)?);
    let dst = Addr::from_v4(load::<[u8; 4]>(ctx, ETH_HLEN + 16)?);
    let mut packet = Packet {
        src,
        dst,
        local: src,
        remote: dst,
        protocol,
        sport: 0,
        dport: 0,
        kind: CT_KIND_PLAIN,
        tcp_flags: 0,
        fragment: frag & 0x1fff != 0,
        first_fragment: frag & 0x3fff == 0x2000,
        frag_id: u32::from(id),
        ext_headers: false,
        neighbour_discovery: false,
    };
    if !packet.fragment {
        read_l4(ctx, ETH_HLEN + ihl, &mut packet)?;
    }
    Ok(packet)
}

#[inline(always)]
fn parse_v6(ctx: &TcContext) -> Result<Packet, DropReason> {
    let version = load::<u8>(ctx, ETH_HLEN)? >> 4;
    if version != 6 {
        return Err(DropReason::Malformed);
    }
    let next = load::<u8>(ctx, ETH_HLEN + 6)?;
    let hop_limit = load::<u8>(ctx, ETH_HLEN + 7)?;
    let src = Addr::from_v6(load::<[u8; 16]>(ctx, ETH_HLEN + 8)?);
    let dst = Addr::from_v6(load::<[u8; 16]>(ctx, ETH_HLEN + 24)?);
    // An IPv4-mapped address never belongs on the wire (RFC 4291 2.5.5.2), and in the maps it
    // is the IPv4 address it maps: an IPv6 packet carrying one would be judged as that IPv4 peer.
    if src.is_v4() || dst.is_v4() {
        return Err(DropReason::Malformed);
    }
    let mut packet = Packet {
        src,
        dst,
        local: src,
        remote: dst,
        protocol: next,
        sport: 0,
        dport: 0,
        kind: CT_KIND_PLAIN,
        tcp_flags: 0,
        fragment: false,
        first_fragment: false,
        frag_id: 0,
        ext_headers: false,
        neighbour_discovery: false,
    };
    let mut l4 = ETH_HLEN + IPV6_HLEN;
    if next == IPV6_FRAGMENT {
        // A fragment header straight after the fixed header, the one extension header walked:
        // later fragments then get their datagram's verdict (see `fragments.rs`).
        let header = load::<[u8; 8]>(ctx, l4)?;
        let offset_flags = u16::from_be_bytes([header[2], header[3]]);
        packet.protocol = header[0];
        packet.frag_id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        packet.fragment = offset_flags >> 3 != 0;
        packet.first_fragment = offset_flags & 0xfff9 == 1;
        l4 += IPV6_FRAGMENT_HLEN;
        if packet.fragment {
            return Ok(packet);
        }
    }
    match packet.protocol {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_ICMPV6 => {
            read_l4(ctx, l4, &mut packet)?;
            // Neighbour discovery passes unjudged only as what it is: on-link (hop limit 255,
            // which a forwarded packet never has, RFC 4861 7.1) and link-scoped, so an ICMPv6
            // message of an ND type is no way to carry data past policy to a routed address.
            if packet.neighbour_discovery
                && (hop_limit != 255
                    || packet.fragment
                    || packet.first_fragment
                    || !(link_scoped(&src) || link_scoped(&dst)))
            {
                packet.neighbour_discovery = false;
            }
        }
        // Hop-by-hop, routing, fragment, destination options, AH, ESP, mobility: not walked.
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 => packet.ext_headers = true,
        _ => {}
    }
    Ok(packet)
}

/// Link-local unicast (`fe80::/10`), link-local multicast (`ff02::/16`) or unspecified.
#[inline(always)]
fn link_scoped(addr: &Addr) -> bool {
    let [b0, b1] = addr.prefix16();
    (b0 == 0xfe && b1 & 0xc0 == 0x80) || (b0 == 0xff && b1 & 0x0f == 0x02) || addr.words == [0; 4]
}

#[inline(always)]
fn read_l4(ctx: &TcContext, offset: usize, packet: &mut Packet) -> Result<(), DropReason> {
    match packet.protocol {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let ports = load::<[u8; 4]>(ctx, offset)?;
            packet.sport = u16::from_be_bytes([ports[0], ports[1]]);
            packet.dport = u16::from_be_bytes([ports[2], ports[3]]);
            if packet.protocol == PROTO_TCP {
                packet.tcp_flags = load::<u8>(ctx, offset + 13)?;
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let header = load::<[u8; 8]>(ctx, offset)?;
            let (icmp_type, code) = (header[0], header[1]);
            if packet.protocol == PROTO_ICMPV6 && (133..=137).contains(&icmp_type) {
                packet.neighbour_discovery = true;
            }
            // Echo (v4: request 8, reply 0; v6: 128, 129) is keyed by its identifier and its
            // role: a reply turned around is its request's key, and a request is never found
            // as the reply of one. Anything else by type and code, tracked one way only.
            let id = u16::from_be_bytes([header[4], header[5]]);
            match (packet.protocol, icmp_type) {
                (PROTO_ICMP, 8) | (PROTO_ICMPV6, 128) => {
                    packet.kind = CT_KIND_ECHO_REQUEST;
                    packet.sport = id;
                }
                (PROTO_ICMP, 0) | (PROTO_ICMPV6, 129) => {
                    packet.kind = CT_KIND_ECHO_REPLY;
                    packet.dport = id;
                }
                _ => {
                    packet.kind = CT_KIND_ICMP_OTHER;
                    packet.sport = u16::from(icmp_type);
                    packet.dport = u16::from(code);
                }
            }
        }
        _ => {}
    }
    Ok(())
}
