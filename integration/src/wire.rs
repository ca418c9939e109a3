//! Packets on a real wire: checksum-correct IPv4 and IPv6 packets (TCP, UDP, ICMP, ICMPv6),
//! framed in Ethernet and sent from inside a namespace through an `AF_PACKET` socket bound to
//! one interface ([`Port`]), and every frame that reaches an interface, captured by another
//! ([`Capture`]). Unlike [`crate::frames`], whose frames only the programs read, these frames
//! cross kernels: a bad checksum would be dropped by the receiver's stack and prove nothing.

use std::{
    io, mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use palisade_lab::netns::NetNs;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
/// IPv4 flags and fragment offset: more fragments.
pub const MF: u16 = 0x2000;

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of an L4 `segment` (TCP, UDP, ICMPv6) under the pseudo-header of its addresses.
fn l4_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + segment.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend(s.octets());
            pseudo.extend(d.octets());
            pseudo.extend([0, protocol]);
            pseudo.extend(u16::try_from(segment.len()).expect("small").to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend(s.octets());
            pseudo.extend(d.octets());
            pseudo.extend(u32::try_from(segment.len()).expect("small").to_be_bytes());
            pseudo.extend([0, 0, 0, protocol]);
        }
        _ => panic!("addresses of one family: {src}, {dst}"),
    }
    pseudo.extend(segment);
    checksum(&pseudo)
}

/// A UDP datagram from `src`:`sport` to `dst`:`dport`, checksummed.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("small datagram");
    let mut d = Vec::with_capacity(usize::from(len));
    d.extend(sport.to_be_bytes());
    d.extend(dport.to_be_bytes());
    d.extend(len.to_be_bytes());
    d.extend([0, 0]);
    d.extend(payload);
    let sum = match l4_checksum(src, dst, UDP, &d) {
        0 => 0xffff,
        sum => sum,
    };
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    d
}

/// A TCP segment with `flags`, sequence number `seq`, acknowledgement `ack`, checksummed.
#[expect(
    clippy::too_many_arguments,
    reason = "a TCP header has that many fields"
)]
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend(sport.to_be_bytes());
    s.extend(dport.to_be_bytes());
    s.extend(seq.to_be_bytes());
    s.extend(ack.to_be_bytes());
    s.extend([5 << 4, flags]);
    s.extend(64240u16.to_be_bytes()); // window
    s.extend([0, 0, 0, 0]); // checksum, urgent pointer
    s.extend(payload);
    let sum = l4_checksum(src, dst, TCP, &s);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

/// An ICMP (IPv4) message: type, code, the 4 bytes after the checksum, and its body.
pub fn icmp4(icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, code, 0, 0];
    m.extend(rest);
    m.extend(body);
    let sum = checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// An ICMPv6 message from `src` to `dst`, checksummed under their pseudo-header.
pub fn icmp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut m = vec![icmp_type, code, 0, 0];
    m.extend(rest);
    m.extend(body);
    let sum = l4_checksum(src.into(), dst.into(), ICMPV6, &m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// An IPv4 header as a test may bend it; [`V4::packet`] fills in lengths and the checksum
/// unless told otherwise.
#[derive(Clone, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units).
    pub frag: u16,
    /// A multiple of 4 bytes.
    pub options: Vec<u8>,
    /// Overrides the header length field (in 4-byte words).
    pub ihl: Option<u8>,
    /// Overrides the total length field (bytes after it are padding).
    pub total_len: Option<u16>,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        Self {
            src,
            dst,
            protocol,
            ttl: 64,
            id: 0x5a5a,
            frag: 0,
            options: Vec::new(),
            ihl: None,
            total_len: None,
        }
    }

    /// The header and `payload`.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0, "IPv4 options fill 4-byte words");
        let header_len = 20 + self.options.len();
        let ihl = self
            .ihl
            .unwrap_or(u8::try_from(header_len / 4).expect("ihl"));
        let total = self
            .total_len
            .unwrap_or(u16::try_from(header_len + payload.len()).expect("small packet"));
        let mut p = Vec::with_capacity(header_len + payload.len());
        p.extend([0x40 | (ihl & 0x0f), 0]);
        p.extend(total.to_be_bytes());
        p.extend(self.id.to_be_bytes());
        p.extend(self.frag.to_be_bytes());
        p.extend([self.ttl, self.protocol, 0, 0]);
        p.extend(self.src.octets());
        p.extend(self.dst.octets());
        p.extend(&self.options);
        let sum = checksum(&p);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend(payload);
        p
    }

    /// `l4` (a whole checksummed segment) cut into fragments of at most `size` bytes each (a
    /// multiple of 8), in order.
    pub fn fragments(&self, l4: &[u8], size: usize) -> Vec<Vec<u8>> {
        assert_eq!(size % 8, 0, "fragment offsets count 8-byte units");
        let chunks: Vec<&[u8]> = l4.chunks(size).collect();
        let last = chunks.len() - 1;
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let offset = u16::try_from(i * size / 8).expect("offset");
                let more = if i < last { MF } else { 0 };
                V4 {
                    frag: more | offset,
                    ..self.clone()
                }
                .packet(chunk)
            })
            .collect()
    }
}

/// An IPv6 packet whose first next-header is `next`, hop limit 64.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("small packet");
    let mut p = vec![0x60, 0, 0, 0];
    p.extend(len.to_be_bytes());
    p.extend([next, 64]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(payload);
    p
}

/// `l4` (of `protocol`) in a plain IP packet of its addresses' family.
pub fn ip(src: IpAddr, dst: IpAddr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => V4::new(s, d, protocol).packet(l4),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s, d, protocol, l4),
        _ => panic!("addresses of one family: {src}, {dst}"),
    }
}

/// A whole UDP packet.
pub fn udp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ip(src, dst, UDP, &udp(src, dst, sport, dport, payload))
}

/// A whole TCP packet, sequence number 1000, acknowledging 1 when `flags` hold ACK.
pub fn tcp_packet(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let ack = if flags & ACK != 0 { 1 } else { 0 };
    ip(
        src,
        dst,
        TCP,
        &tcp(src, dst, sport, dport, flags, 1000, ack, payload),
    )
}

/// An ICMP echo request or reply (IPv4 types 8/0, IPv6 128/129) with `id`, sequence 1.
pub fn echo_packet(src: IpAddr, dst: IpAddr, request: bool, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut rest = [0, 0, 0, 1];
    rest[..2].copy_from_slice(&id.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let t = if request { 8 } else { 0 };
            ip(src, dst, ICMP, &icmp4(t, 0, rest, payload))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let t = if request { 128 } else { 129 };
            ipv6(s, d, ICMPV6, &icmp6(s, d, t, 0, rest, payload))
        }
        _ => panic!("addresses of one family: {src}, {dst}"),
    }
}

/// An Ethernet frame around an IP packet (the EtherType from its version).
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ip_packet: &[u8]) -> Vec<u8> {
    let ethertype: u16 = if ip_packet.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    let mut f = Vec::with_capacity(14 + ip_packet.len());
    f.extend(dst);
    f.extend(src);
    f.extend(ethertype.to_be_bytes());
    f.extend(ip_packet);
    f
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An `AF_PACKET` socket bound to one interface of a namespace, receiving every protocol.
fn packet_socket(netns: &NetNs, ifname: &str) -> io::Result<(OwnedFd, [u8; 6])> {
    let ifname = std::ffi::CString::new(ifname).expect("interface name");
    netns
        .run(move || {
            // SAFETY: plain syscalls on a socket this closure owns; the sockaddr is zeroed
            // plain data of the size passed.
            unsafe {
                let ifindex = libc::if_nametoindex(ifname.as_ptr());
                if ifindex == 0 {
                    return Err(io::Error::last_os_error());
                }
                let all = (libc::ETH_P_ALL as u16).to_be();
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(all),
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let mut addr: libc::sockaddr_ll = mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = all;
                addr.sll_ifindex = i32::try_from(ifindex).expect("ifindex");
                let len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                if libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // A bound packet socket's name carries its interface's hardware address.
                let mut name: libc::sockaddr_ll = mem::zeroed();
                let mut name_len = len;
                if libc::getsockname(fd.as_raw_fd(), (&raw mut name).cast(), &mut name_len) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut mac = [0; 6];
                mac.copy_from_slice(&name.sll_addr[..6]);
                Ok((fd, mac))
            }
        })
        .map_err(|e| io::Error::other(e.to_string()))?
}

/// The hardware address of `ifname` in `netns`.
pub fn mac_of(netns: &NetNs, ifname: &str) -> [u8; 6] {
    packet_socket(netns, ifname)
        .unwrap_or_else(|e| panic!("{ifname} in {}: {e}", netns.name()))
        .1
}

/// One end of a link, to send crafted frames from: its interface, and the MAC of the other end.
pub struct Port {
    fd: OwnedFd,
    pub mac: [u8; 6],
    pub peer_mac: [u8; 6],
}

impl Port {
    /// `ifname` in `netns`, whose frames go to the interface with MAC `peer_mac`.
    pub fn open(netns: &NetNs, ifname: &str, peer_mac: [u8; 6]) -> Self {
        let (fd, mac) = packet_socket(netns, ifname)
            .unwrap_or_else(|e| panic!("packet socket on {ifname} in {}: {e}", netns.name()));
        // Never read: keep its receive queue from growing.
        // SAFETY: shutdown on an owned socket.
        unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
        Self { fd, mac, peer_mac }
    }

    /// Sends `ip_packet` in a frame to the peer.
    pub fn send(&self, ip_packet: &[u8]) {
        self.send_frame(&ethernet(self.peer_mac, self.mac, ip_packet));
    }

    /// Sends a whole Ethernet frame as it is.
    pub fn send_frame(&self, frame: &[u8]) {
        // SAFETY: send from a live buffer of the length given.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            usize::try_from(sent).ok(),
            Some(frame.len()),
            "send a {}-byte frame: {}",
            frame.len(),
            io::Error::last_os_error()
        );
    }
}

/// Every frame an interface receives (not those it sends), from the moment it is opened.
pub struct Capture {
    fd: OwnedFd,
    what: String,
}

impl Capture {
    pub fn open(netns: &NetNs, ifname: &str) -> Self {
        let (fd, _) = packet_socket(netns, ifname)
            .unwrap_or_else(|e| panic!("capture on {ifname} in {}: {e}", netns.name()));
        Self {
            fd,
            what: format!("{ifname} in {}", netns.name()),
        }
    }

    /// The next received frame within `timeout`.
    fn next(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one pollfd, owned here.
            let ready = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if ready <= 0 {
                return None;
            }
            let mut buf = vec![0u8; 65536];
            // SAFETY: zeroed plain data, and a buffer of the length given.
            let (n, from) = unsafe {
                let mut from: libc::sockaddr_ll = mem::zeroed();
                let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                let n = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &mut len,
                );
                (n, from)
            };
            let Ok(n) = usize::try_from(n) else {
                continue;
            };
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n);
            return Some(buf);
        }
    }

    /// The first received frame that `wanted` accepts, waiting at most `timeout`.
    pub fn wait_for(&self, timeout: Duration, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.next(left)?;
            if wanted(&frame) {
                return Some(frame);
            }
        }
    }

    /// Every received frame carrying `marker`, within `timeout`.
    pub fn all_with(&self, marker: &[u8], timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(frame) = self.next(deadline.saturating_duration_since(Instant::now())) {
            if contains(&frame, marker) {
                out.push(frame);
            }
        }
        out
    }

    /// Whether a frame carrying `marker` arrives within `timeout`.
    pub fn sees(&self, marker: &[u8], timeout: Duration) -> bool {
        self.wait_for(timeout, |f| contains(f, marker)).is_some()
    }

    /// Panics if a frame carrying `marker` arrives within `timeout`: `attack` got through.
    pub fn assert_none(&self, marker: &[u8], timeout: Duration, attack: &str) {
        if let Some(frame) = self.wait_for(timeout, |f| contains(f, marker)) {
            panic!(
                "{attack}: a frame reached {} ({} bytes: {:02x?})",
                self.what,
                frame.len(),
                &frame[..frame.len().min(80)]
            );
        }
    }

    /// Panics unless a frame carrying `marker` arrives within `timeout`: `control` is dead.
    pub fn assert_some(&self, marker: &[u8], timeout: Duration, control: &str) -> Vec<u8> {
        self.wait_for(timeout, |f| contains(f, marker))
            .unwrap_or_else(|| panic!("{control}: nothing reached {} in {timeout:?}", self.what))
    }
}
