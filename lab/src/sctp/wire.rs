//! The SCTP packet format, as far as the lab's handshake needs it (RFC 9260, formerly RFC 4960,
//! section 3): the common header and one chunk of INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK or
//! ABORT. Every packet the lab sends carries exactly one chunk; of a received packet only the
//! first chunk is read (INIT must be alone in its packet anyway).

use crc::{CRC_32_ISCSI, Crc};

/// Source port, destination port, verification tag, checksum.
const COMMON_HEADER_LEN: usize = 12;
const CHUNK_HEADER_LEN: usize = 4;
/// Initiate tag, a_rwnd, outbound and inbound streams, initial TSN.
const INIT_FIXED_LEN: usize = 16;

const CHUNK_INIT: u8 = 1;
const CHUNK_INIT_ACK: u8 = 2;
const CHUNK_ABORT: u8 = 6;
const CHUNK_COOKIE_ECHO: u8 = 10;
const CHUNK_COOKIE_ACK: u8 = 11;
/// The T bit of ABORT: the verification tag is the sender's own, reflected back.
const ABORT_T_BIT: u8 = 0x01;
const PARAM_STATE_COOKIE: u16 = 7;

/// CRC32c, the Castagnoli polynomial, reflected, as iSCSI uses it (RFC 9260 appendix A,
/// RFC 3309). A maintained implementation rather than a hand-rolled table.
const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// What makes a received packet unusable; such packets are dropped silently.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{len} bytes are too short for an SCTP common header and a chunk header")]
    TooShort { len: usize },
    #[error("SCTP checksum {carried:#010x} does not match the computed {computed:#010x}")]
    BadChecksum { carried: u32, computed: u32 },
    #[error("SCTP chunk of type {kind} claims {length} bytes where {available} are left")]
    BadChunkLength {
        kind: u8,
        length: usize,
        available: usize,
    },
    #[error("SCTP INIT-ACK without a State Cookie parameter")]
    MissingCookie,
}

/// One SCTP packet of one chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src_port: u16,
    pub dst_port: u16,
    /// 0 in an INIT; otherwise the receiver's initiate tag (or, in an ABORT with the T bit,
    /// the sender's own).
    pub verification_tag: u32,
    pub chunk: Chunk,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    Init(Init),
    /// An INIT-ACK: the responder's own INIT parameters and the cookie to echo.
    InitAck {
        init: Init,
        cookie: Vec<u8>,
    },
    CookieEcho {
        cookie: Vec<u8>,
    },
    CookieAck,
    /// `reflected` is the T bit (the verification tag is the sender's own).
    Abort {
        reflected: bool,
    },
    /// Any other chunk type, left unread.
    Other {
        kind: u8,
    },
}

/// The fixed part of INIT and INIT-ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Init {
    /// The tag the peer must put into every packet it sends back; never 0.
    pub initiate_tag: u32,
    pub a_rwnd: u32,
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub initial_tsn: u32,
}

impl Packet {
    /// The packet as sent: padded chunk, checksum filled in.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.src_port.to_be_bytes());
        out.extend_from_slice(&self.dst_port.to_be_bytes());
        out.extend_from_slice(&self.verification_tag.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        match &self.chunk {
            Chunk::Init(init) => push_chunk(&mut out, CHUNK_INIT, 0, &init.encode()),
            Chunk::InitAck { init, cookie } => {
                let mut value = init.encode().to_vec();
                let length = u16::try_from(CHUNK_HEADER_LEN + cookie.len()).unwrap_or(u16::MAX);
                value.extend_from_slice(&PARAM_STATE_COOKIE.to_be_bytes());
                value.extend_from_slice(&length.to_be_bytes());
                value.extend_from_slice(cookie);
                push_chunk(&mut out, CHUNK_INIT_ACK, 0, &value);
            }
            Chunk::CookieEcho { cookie } => push_chunk(&mut out, CHUNK_COOKIE_ECHO, 0, cookie),
            Chunk::CookieAck => push_chunk(&mut out, CHUNK_COOKIE_ACK, 0, &[]),
            Chunk::Abort { reflected } => {
                let flags = if *reflected { ABORT_T_BIT } else { 0 };
                push_chunk(&mut out, CHUNK_ABORT, flags, &[]);
            }
            Chunk::Other { kind } => push_chunk(&mut out, *kind, 0, &[]),
        }
        let crc = checksum(&out);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a received packet (the SCTP part only, no IP header), checksum first.
    pub fn decode(bytes: &[u8]) -> Result<Packet, WireError> {
        if bytes.len() < COMMON_HEADER_LEN + CHUNK_HEADER_LEN {
            return Err(WireError::TooShort { len: bytes.len() });
        }
        let carried = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let computed = checksum(bytes);
        if carried != computed {
            return Err(WireError::BadChecksum { carried, computed });
        }
        let chunk = &bytes[COMMON_HEADER_LEN..];
        let (kind, flags) = (chunk[0], chunk[1]);
        let length = usize::from(be16(chunk, 2));
        if length < CHUNK_HEADER_LEN || length > chunk.len() {
            return Err(WireError::BadChunkLength {
                kind,
                length,
                available: chunk.len(),
            });
        }
        let value = &chunk[CHUNK_HEADER_LEN..length];
        let fixed = |value: &[u8]| {
            Init::decode(value).ok_or(WireError::BadChunkLength {
                kind,
                length,
                available: chunk.len(),
            })
        };
        let chunk = match kind {
            CHUNK_INIT => Chunk::Init(fixed(value)?),
            CHUNK_INIT_ACK => Chunk::InitAck {
                init: fixed(value)?,
                cookie: state_cookie(&value[INIT_FIXED_LEN..]).ok_or(WireError::MissingCookie)?,
            },
            CHUNK_COOKIE_ECHO => Chunk::CookieEcho {
                cookie: value.to_vec(),
            },
            CHUNK_COOKIE_ACK => Chunk::CookieAck,
            CHUNK_ABORT => Chunk::Abort {
                reflected: flags & ABORT_T_BIT != 0,
            },
            kind => Chunk::Other { kind },
        };
        Ok(Packet {
            src_port: be16(bytes, 0),
            dst_port: be16(bytes, 2),
            verification_tag: be32(bytes, 4),
            chunk,
        })
    }
}

impl Init {
    fn encode(&self) -> [u8; INIT_FIXED_LEN] {
        let mut out = [0; INIT_FIXED_LEN];
        out[0..4].copy_from_slice(&self.initiate_tag.to_be_bytes());
        out[4..8].copy_from_slice(&self.a_rwnd.to_be_bytes());
        out[8..10].copy_from_slice(&self.outbound_streams.to_be_bytes());
        out[10..12].copy_from_slice(&self.inbound_streams.to_be_bytes());
        out[12..16].copy_from_slice(&self.initial_tsn.to_be_bytes());
        out
    }

    fn decode(value: &[u8]) -> Option<Init> {
        (value.len() >= INIT_FIXED_LEN).then(|| Init {
            initiate_tag: be32(value, 0),
            a_rwnd: be32(value, 4),
            outbound_streams: be16(value, 8),
            inbound_streams: be16(value, 10),
            initial_tsn: be32(value, 12),
        })
    }
}

/// CRC32c over the whole SCTP packet with its checksum field taken as zero; SCTP has no
/// pseudo-header, so the IP addresses do not enter, for IPv4 and IPv6 alike.
///
/// The CRC goes on the wire least significant byte first (RFC 9260 appendix A transmits the
/// reflected CRC that way; Linux stores it as `cpu_to_le32`), hence `to_le_bytes`.
fn checksum(packet: &[u8]) -> u32 {
    let mut digest = CRC32C.digest();
    digest.update(&packet[..8]);
    digest.update(&[0; 4]);
    digest.update(&packet[COMMON_HEADER_LEN..]);
    digest.finalize()
}

/// Appends a chunk; its length field counts the header and value, not the padding to 4 bytes.
fn push_chunk(out: &mut Vec<u8>, kind: u8, flags: u8, value: &[u8]) {
    let length = u16::try_from(CHUNK_HEADER_LEN + value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The State Cookie among INIT-ACK parameters (type, length, value; each padded to 4 bytes).
fn state_cookie(mut params: &[u8]) -> Option<Vec<u8>> {
    while params.len() >= 4 {
        let (kind, length) = (be16(params, 0), usize::from(be16(params, 2)));
        if length < 4 || length > params.len() {
            return None;
        }
        if kind == PARAM_STATE_COOKIE {
            return Some(params[4..length].to_vec());
        }
        params = params.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An INIT from a Diameter peer (port 4068 to 3868) as captured on the wire: written by a
    /// real SCTP stack, checksum included.
    const CAPTURED_INIT: [u8; 32] = [
        0x0f, 0xe4, 0x0f, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x9f, 0x78, 0xa7, 0x04, 0x01, 0x00, 0x00,
        0x14, 0xbb, 0x7b, 0x0f, 0x9c, 0x00, 0x00, 0xfa, 0x00, 0x00, 0x0a, 0x00, 0x0a, 0xbb, 0x7b,
        0x0f, 0x9c,
    ];

    fn init(tag: u32) -> Init {
        Init {
            initiate_tag: tag,
            a_rwnd: 65_535,
            outbound_streams: 1,
            inbound_streams: 1,
            initial_tsn: 7,
        }
    }

    #[test]
    fn the_checksum_is_crc32c_sent_least_significant_byte_first() {
        // The standard check value of CRC-32C.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        // RFC 3720 appendix B.4: 32 zero bytes give the CRC bytes aa 36 91 8a on the wire.
        assert_eq!(
            CRC32C.checksum(&[0; 32]).to_le_bytes(),
            [0xaa, 0x36, 0x91, 0x8a]
        );
    }

    #[test]
    fn a_captured_init_decodes_and_encodes_back_to_the_same_bytes() -> Result<(), WireError> {
        let packet = Packet::decode(&CAPTURED_INIT)?;
        assert_eq!(
            packet,
            Packet {
                src_port: 4068,
                dst_port: 3868,
                verification_tag: 0,
                chunk: Chunk::Init(Init {
                    initiate_tag: 0xbb7b_0f9c,
                    a_rwnd: 64_000,
                    outbound_streams: 10,
                    inbound_streams: 10,
                    initial_tsn: 0xbb7b_0f9c,
                }),
            }
        );
        assert_eq!(packet.encode(), CAPTURED_INIT);
        Ok(())
    }

    #[test]
    fn every_chunk_the_lab_sends_reads_back_as_sent() -> Result<(), WireError> {
        let chunks = [
            Chunk::Init(init(1)),
            // An odd cookie length: the parameter and the chunk are padded.
            Chunk::InitAck {
                init: init(2),
                cookie: vec![1, 2, 3, 4, 5],
            },
            Chunk::CookieEcho {
                cookie: vec![9, 8, 7],
            },
            Chunk::CookieAck,
            Chunk::Abort { reflected: false },
            Chunk::Abort { reflected: true },
        ];
        for chunk in chunks {
            let packet = Packet {
                src_port: 40_000,
                dst_port: 80,
                verification_tag: 0xdead_beef,
                chunk,
            };
            let bytes = packet.encode();
            assert_eq!(bytes.len() % 4, 0, "{packet:?} is padded");
            assert_eq!(Packet::decode(&bytes)?, packet);
        }
        Ok(())
    }

    #[test]
    fn a_flipped_bit_or_a_cut_packet_is_refused() {
        let mut bytes = CAPTURED_INIT;
        bytes[20] ^= 0x10;
        assert!(matches!(
            Packet::decode(&bytes),
            Err(WireError::BadChecksum { .. })
        ));
        assert_eq!(
            Packet::decode(&CAPTURED_INIT[..14]),
            Err(WireError::TooShort { len: 14 })
        );
        // Cut inside the chunk: the checksum is recomputed so that only the length is wrong.
        let mut cut = CAPTURED_INIT[..24].to_vec();
        let crc = checksum(&cut);
        cut[8..12].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Packet::decode(&cut),
            Err(WireError::BadChunkLength { kind: 1, .. })
        ));
    }

    #[test]
    fn an_init_ack_without_a_state_cookie_is_refused() {
        let mut bytes = Packet {
            src_port: 80,
            dst_port: 40_000,
            verification_tag: 1,
            chunk: Chunk::Init(init(2)),
        }
        .encode();
        bytes[COMMON_HEADER_LEN] = CHUNK_INIT_ACK;
        let crc = checksum(&bytes);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Packet::decode(&bytes), Err(WireError::MissingCookie));
    }
}
