//! SCTP, spoken by the lab itself over raw sockets.
//!
//! The lab kernels are built without SCTP (`CONFIG_IP_SCTP` is not set, so
//! `socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)` fails), while netfilter's SCTP conntrack is
//! there. So the lab speaks just enough SCTP itself, over raw IP sockets of protocol 132:
//!
//! - a probe ([`associate`]) sends an INIT, answers the INIT-ACK with a COOKIE-ECHO and counts
//!   as connected when the COOKIE-ACK arrives (the four-way handshake of RFC 9260 section 5.1),
//!   then sends an ABORT to close, as a TCP probe closes its connection;
//! - every pod runs a responder ([`respond`]) that answers an INIT to a served port with an
//!   INIT-ACK carrying a state cookie, a valid COOKIE-ECHO with a COOKIE-ACK, and an INIT to any
//!   other port with an ABORT, as a real stack without a listener does.
//!
//! These are real SCTP packets with correct CRC32c checksums, so the eBPF programs (and
//! netfilter, on Service paths) see and judge exactly what they would judge from a kernel's
//! SCTP stack: the INIT is the packet a policy decides on, everything after it is a reply or a
//! continuation of that flow.
//!
//! Raw sockets get a copy of every SCTP packet delivered to their namespace, so each side
//! filters by address, ports, chunk and verification tag; a packet with a bad checksum is
//! dropped silently, as a stack does. The kernel has no SCTP of its own here and never answers
//! on its own (not even with an ABORT), and as long as a raw socket of protocol 132 is open it
//! sends no ICMP "protocol unreachable" either.

mod socket;
mod wire;

pub use socket::{Association, RawSctp, associate, respond};
pub use wire::{Chunk, Init, Packet, WireError};
