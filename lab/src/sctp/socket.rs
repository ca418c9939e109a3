//! Raw SCTP sockets in pods: the responder every pod runs, and the prober's end of the
//! handshake. Sockets are opened inside a pod's namespace ([`RawSctp::open`], on a namespace
//! thread) and then driven from the caller's tokio runtime.

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, OwnedFd},
    time::Duration,
};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrStorage,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::Instant,
};

use super::wire::{Chunk, Init, Packet};

/// How long a probe waits for an answer before sending its INIT or COOKIE-ECHO again. SCTP's
/// own T1 timer starts at 3 s, longer than a whole lab probe, and a first packet may be lost
/// while a neighbour is resolved.
const RESEND: Duration = Duration::from_millis(500);
/// What the lab advertises; it never sends data.
const A_RWND: u32 = 65_535;
const STREAMS: u16 = 1;
/// Probes pick their source port from the dynamic range (RFC 6335).
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49_152..=65_535;
/// The largest IPv4 header; an IPv4 raw socket hands over the header with the packet.
const IPV4_MAX_HEADER: usize = 60;

/// A raw socket of protocol 132 on the runtime: it receives a copy of every SCTP packet that
/// reaches its namespace, and sends SCTP packets whose IP header the kernel writes.
#[derive(Debug)]
pub struct RawSctp {
    fd: AsyncFd<OwnedFd>,
    v6: bool,
}

/// How a probe's handshake ended (a silent drop is a timeout, left to the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Association {
    /// INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK: the association was up (and is aborted again).
    Established,
    /// The peer answered with an ABORT: reachable, nobody listening on that port.
    Aborted,
}

impl RawSctp {
    /// Opens a non-blocking raw SCTP socket; call it inside the namespace it is for.
    pub fn open(v6: bool) -> nix::Result<OwnedFd> {
        let family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        socket::socket(family, SockType::Raw, flags, SockProtocol::Sctp)
    }

    /// Registers a socket from [`RawSctp::open`] with the current tokio runtime.
    pub fn new(fd: OwnedFd, v6: bool) -> io::Result<Self> {
        // SAFETY: an `OwnedFd` is an open descriptor that stays open, and always the same one,
        // until it is dropped, which only happens with the `AsyncFd` that owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(RawSctp { fd, v6 })
    }

    async fn send(&self, to: IpAddr, packet: &Packet) -> io::Result<()> {
        let bytes = packet.encode();
        // A raw socket ignores the port; for IPv6 it must be 0 (or the protocol).
        let addr = SockaddrStorage::from(SocketAddr::new(to, 0));
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                socket::sendto(fd.as_raw_fd(), &bytes, &addr, MsgFlags::empty())
                    .map(drop)
                    .map_err(io::Error::from)
            })
            .await
    }

    /// The next SCTP packet to reach the namespace, with its source; `None` for one that does
    /// not parse or fails its checksum.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(IpAddr, Packet)>> {
        let (len, from) = self
            .fd
            .async_io(Interest::READABLE, |fd| {
                socket::recvfrom::<SockaddrStorage>(fd.as_raw_fd(), buf).map_err(io::Error::from)
            })
            .await?;
        let from = from.and_then(|a| {
            a.as_sockaddr_in()
                .map(|a| IpAddr::V4(a.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        });
        let Some(from) = from else {
            return Ok(None);
        };
        let received = &buf[..len];
        let sctp = if self.v6 {
            // IPv6 raw sockets never see the IP header.
            Some(received)
        } else {
            received
                .first()
                .map(|b| usize::from(b & 0x0f) * 4)
                .filter(|&ihl| ihl >= 20)
                .and_then(|ihl| received.get(ihl..))
        };
        Ok(sctp
            .and_then(|bytes| Packet::decode(bytes).ok())
            .map(|p| (from, p)))
    }
}

/// A pod's SCTP stack: answers INITs and COOKIE-ECHOs for `ports` (and ABORTs INITs for any
/// other port) until the task is dropped.
pub async fn respond(socket: RawSctp, ports: BTreeSet<u16>) {
    let mut buf = vec![0u8; IPV4_MAX_HEADER + 2048];
    loop {
        let (peer, packet) = match socket.recv(&mut buf).await {
            Ok(Some(received)) => received,
            Ok(None) => continue,
            Err(error) => {
                tracing::debug!(error = %error, "SCTP receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(reply) = answer(&packet, &ports, random_tag) else {
            continue;
        };
        if let Err(error) = socket.send(peer, &reply).await {
            tracing::debug!(error = %error, %peer, "SCTP reply failed");
        }
    }
}

/// What a stateless SCTP server answers to `packet`, if anything.
///
/// Only INIT and COOKIE-ECHO are answered. A real stack would also ABORT other out-of-the-blue
/// packets (RFC 9260 section 8.4), but here the INIT-ACKs and COOKIE-ACKs that reach this pod
/// belong to its own probes, which share the namespace; so they are left alone.
fn answer(packet: &Packet, ports: &BTreeSet<u16>, own_tag: impl FnOnce() -> u32) -> Option<Packet> {
    let served = ports.contains(&packet.dst_port);
    let (verification_tag, chunk) = match &packet.chunk {
        // An INIT travels with tag 0 and announces a non-zero one (section 8.5.1, 5.1).
        Chunk::Init(init) if packet.verification_tag == 0 && init.initiate_tag != 0 => {
            if served {
                let own = own_tag();
                let cookie = Cookie {
                    own_tag: own,
                    peer_tag: init.initiate_tag,
                    peer_port: packet.src_port,
                    own_port: packet.dst_port,
                };
                let chunk = Chunk::InitAck {
                    init: Init {
                        initiate_tag: own,
                        a_rwnd: A_RWND,
                        outbound_streams: STREAMS,
                        inbound_streams: STREAMS,
                        initial_tsn: own,
                    },
                    cookie: cookie.encode().to_vec(),
                };
                (init.initiate_tag, chunk)
            } else {
                // No listener: ABORT, tagged with the INIT's tag, T bit clear (section 8.4).
                (init.initiate_tag, Chunk::Abort { reflected: false })
            }
        }
        Chunk::CookieEcho { cookie } if served => {
            let cookie = Cookie::decode(cookie)?;
            let ours = cookie.own_tag == packet.verification_tag
                && cookie.own_port == packet.dst_port
                && cookie.peer_port == packet.src_port;
            if !ours {
                return None;
            }
            (cookie.peer_tag, Chunk::CookieAck)
        }
        _ => return None,
    };
    Some(Packet {
        src_port: packet.dst_port,
        dst_port: packet.src_port,
        verification_tag,
        chunk,
    })
}

/// Everything the responder needs to accept a COOKIE-ECHO without keeping state. Not signed:
/// in a lab nobody forges cookies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cookie {
    own_tag: u32,
    peer_tag: u32,
    peer_port: u16,
    own_port: u16,
}

impl Cookie {
    fn encode(&self) -> [u8; 12] {
        let mut out = [0; 12];
        out[0..4].copy_from_slice(&self.own_tag.to_be_bytes());
        out[4..8].copy_from_slice(&self.peer_tag.to_be_bytes());
        out[8..10].copy_from_slice(&self.peer_port.to_be_bytes());
        out[10..12].copy_from_slice(&self.own_port.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Cookie> {
        let bytes: &[u8; 12] = bytes.try_into().ok()?;
        Some(Cookie {
            own_tag: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            peer_tag: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            peer_port: u16::from_be_bytes([bytes[8], bytes[9]]),
            own_port: u16::from_be_bytes([bytes[10], bytes[11]]),
        })
    }
}

/// Runs the four-way handshake with `to` from a random port and tag, resending each step until
/// it is answered; the caller bounds the whole with its probe timeout.
pub async fn associate(socket: &RawSctp, to: SocketAddr) -> io::Result<Association> {
    let own_tag = random_tag();
    let port = EPHEMERAL_PORTS.start() + (random_u32()? % 16_384) as u16;
    let ours = Ours {
        peer: to,
        port,
        own_tag,
    };
    let init = Packet {
        src_port: port,
        dst_port: to.port(),
        verification_tag: 0,
        chunk: Chunk::Init(Init {
            initiate_tag: own_tag,
            a_rwnd: A_RWND,
            outbound_streams: STREAMS,
            inbound_streams: STREAMS,
            initial_tsn: own_tag,
        }),
    };
    let mut buf = vec![0u8; IPV4_MAX_HEADER + 2048];
    let (peer_tag, cookie) = loop {
        socket.send(to.ip(), &init).await?;
        match ours.next_reply(socket, None, &mut buf).await? {
            Some(Chunk::InitAck { init, cookie }) => break (init.initiate_tag, cookie),
            Some(Chunk::Abort { .. }) => return Ok(Association::Aborted),
            _ => {}
        }
    };
    let packet = |chunk| Packet {
        src_port: port,
        dst_port: to.port(),
        verification_tag: peer_tag,
        chunk,
    };
    let echo = packet(Chunk::CookieEcho { cookie });
    loop {
        socket.send(to.ip(), &echo).await?;
        match ours.next_reply(socket, Some(peer_tag), &mut buf).await? {
            Some(Chunk::CookieAck) => break,
            Some(Chunk::Abort { .. }) => return Ok(Association::Aborted),
            _ => {}
        }
    }
    // Close at once, as a TCP probe closes its connection; the responder keeps no state, but
    // conntrack on a Service path does.
    socket
        .send(to.ip(), &packet(Chunk::Abort { reflected: false }))
        .await?;
    Ok(Association::Established)
}

/// What tells this probe's packets from the copies of everything else in the namespace.
struct Ours {
    peer: SocketAddr,
    port: u16,
    own_tag: u32,
}

impl Ours {
    /// The chunk of the next packet of this association within [`RESEND`], or `None`.
    async fn next_reply(
        &self,
        socket: &RawSctp,
        peer_tag: Option<u32>,
        buf: &mut [u8],
    ) -> io::Result<Option<Chunk>> {
        let deadline = Instant::now() + RESEND;
        loop {
            let received = match tokio::time::timeout_at(deadline, socket.recv(buf)).await {
                Err(_elapsed) => return Ok(None),
                Ok(received) => received?,
            };
            let Some((from, packet)) = received else {
                continue;
            };
            let tag_ok = match packet.chunk {
                // With the T bit, an ABORT carries its sender's own tag.
                Chunk::Abort { reflected: true } => Some(packet.verification_tag) == peer_tag,
                _ => packet.verification_tag == self.own_tag,
            };
            if tag_ok
                && from == self.peer.ip()
                && packet.src_port == self.peer.port()
                && packet.dst_port == self.port
            {
                return Ok(Some(packet.chunk));
            }
        }
    }
}

fn random_u32() -> io::Result<u32> {
    getrandom::u32().map_err(|e| io::Error::other(format!("no random numbers: {e}")))
}

/// A non-zero tag (0 is reserved for INITs). It only has to tell associations apart, so a
/// fixed one would do should the kernel's random source ever fail.
fn random_tag() -> u32 {
    random_u32().unwrap_or(0x5ca1_ab1e).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_to(port: u16, tag: u32) -> Packet {
        Packet {
            src_port: 50_000,
            dst_port: port,
            verification_tag: 0,
            chunk: Chunk::Init(Init {
                initiate_tag: tag,
                a_rwnd: A_RWND,
                outbound_streams: 1,
                inbound_streams: 1,
                initial_tsn: 1,
            }),
        }
    }

    #[test]
    fn an_init_to_a_served_port_gets_an_init_ack_whose_cookie_completes_the_handshake() {
        let ports = BTreeSet::from([80]);
        let Some(ack) = answer(&init_to(80, 0xabc), &ports, || 0x123) else {
            panic!("no INIT-ACK")
        };
        assert_eq!(
            (ack.src_port, ack.dst_port, ack.verification_tag),
            (80, 50_000, 0xabc)
        );
        let Chunk::InitAck { init, cookie } = ack.chunk else {
            panic!("not an INIT-ACK: {ack:?}")
        };
        assert_eq!(init.initiate_tag, 0x123);

        let echo = Packet {
            src_port: 50_000,
            dst_port: 80,
            verification_tag: 0x123,
            chunk: Chunk::CookieEcho { cookie },
        };
        let done = answer(&echo, &ports, || {
            unreachable!("no new tag for a COOKIE-ECHO")
        });
        assert_eq!(
            done,
            Some(Packet {
                src_port: 80,
                dst_port: 50_000,
                verification_tag: 0xabc,
                chunk: Chunk::CookieAck,
            })
        );
        // The cookie of another association (wrong tag) is not accepted.
        let stray = Packet {
            verification_tag: 0x124,
            ..echo
        };
        assert_eq!(answer(&stray, &ports, || 1), None);
    }

    #[test]
    fn an_init_to_a_port_without_listener_is_aborted_with_the_inits_tag() {
        let reply = answer(&init_to(81, 0xabc), &BTreeSet::from([80]), || 1);
        assert_eq!(
            reply,
            Some(Packet {
                src_port: 81,
                dst_port: 50_000,
                verification_tag: 0xabc,
                chunk: Chunk::Abort { reflected: false },
            })
        );
    }

    #[test]
    fn replies_meant_for_the_pods_own_probes_and_bad_inits_are_left_alone() {
        let ports = BTreeSet::from([80]);
        let ack = Packet {
            chunk: Chunk::CookieAck,
            verification_tag: 5,
            ..init_to(80, 1)
        };
        assert_eq!(answer(&ack, &ports, || 1), None);
        // An INIT must carry tag 0 and announce a non-zero one.
        let tagged = Packet {
            verification_tag: 9,
            ..init_to(80, 1)
        };
        assert_eq!(answer(&tagged, &ports, || 1), None);
        assert_eq!(answer(&init_to(80, 0), &ports, || 1), None);
    }
}
