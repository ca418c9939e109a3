//! Connectivity probes from a pod: can `from` reach `to` over `proto`, within `timeout`?
//!
//! The socket is made inside the pod's namespace on a short-lived thread; everything after
//! (connecting, sending, waiting) runs on the caller's runtime, so many probes can be in flight
//! at once for the price of one brief thread each.

use std::{
    fmt,
    io::{self, ErrorKind},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::net::{TcpSocket, UdpSocket};

use super::{
    sctp::{self, Association, RawSctp},
    serve::Proto,
    topology::PodHandle,
};

/// How often a UDP probe resends while no echo came back: datagrams may be lost (or the first
/// one may wait on neighbour resolution), a policy drop looks the same as loss.
const UDP_RESEND: Duration = Duration::from_millis(300);

/// What a probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// TCP or SCTP handshake completed, or the UDP echo came back.
    Connected,
    /// The peer answered with a RST, an SCTP ABORT or an ICMP port unreachable: reachable,
    /// nobody listening.
    Refused,
    /// No answer within the timeout: what a silent drop looks like.
    TimedOut,
    /// Anything else (e.g. no route, the pod namespace is gone), as the OS described it.
    Error(String),
}

impl ProbeOutcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, ProbeOutcome::Connected)
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Connected => f.write_str("connected"),
            ProbeOutcome::Refused => f.write_str("refused"),
            ProbeOutcome::TimedOut => f.write_str("timed out"),
            ProbeOutcome::Error(error) => write!(f, "error: {error}"),
        }
    }
}

/// Probes `to` from inside `from`. Never takes longer than `timeout`, socket creation included.
pub async fn probe(
    from: &PodHandle,
    to: SocketAddr,
    proto: Proto,
    timeout: Duration,
) -> ProbeOutcome {
    let attempt = async {
        match proto {
            Proto::Tcp => tcp(from, to).await,
            Proto::Udp => udp(from, to).await,
            Proto::Sctp => sctp(from, to).await,
        }
    };
    let outcome = tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(ProbeOutcome::TimedOut);
    tracing::trace!(pod = %from.key, %to, %proto, %outcome, "probe");
    outcome
}

async fn tcp(from: &PodHandle, to: SocketAddr) -> ProbeOutcome {
    let created = from
        .netns
        .run_async(move || match to {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        })
        .await;
    let socket = match created {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => return from_io(&error),
        Err(error) => return ProbeOutcome::Error(error.to_string()),
    };
    match socket.connect(to).await {
        // Dropping the stream closes it; the handshake was the question.
        Ok(_stream) => ProbeOutcome::Connected,
        Err(error) => from_io(&error),
    }
}

async fn udp(from: &PodHandle, to: SocketAddr) -> ProbeOutcome {
    let local = match to {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let created = from
        .netns
        .run_async(move || {
            let socket = std::net::UdpSocket::bind(local)?;
            socket.set_nonblocking(true)?;
            Ok::<_, io::Error>(socket)
        })
        .await;
    let socket = match created {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => return from_io(&error),
        Err(error) => return ProbeOutcome::Error(error.to_string()),
    };
    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => socket,
        Err(error) => return from_io(&error),
    };
    // Connected, so an ICMP port unreachable comes back as ECONNREFUSED.
    if let Err(error) = socket.connect(to).await {
        return from_io(&error);
    }
    // Distinct per probe, so a late echo of another probe is never taken for ours.
    let payload = format!("palisade-probe {} -> {to}", socket_port(&socket));
    let mut buf = [0u8; 512];
    loop {
        if let Err(error) = socket.send(payload.as_bytes()).await {
            return from_io(&error);
        }
        match tokio::time::timeout(UDP_RESEND, socket.recv(&mut buf)).await {
            Ok(Ok(len)) if &buf[..len] == payload.as_bytes() => return ProbeOutcome::Connected,
            // A stranger's datagram, or no echo yet: send again.
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(error)) => return from_io(&error),
        }
    }
}

/// The lab's own SCTP handshake over a raw socket (the kernel has no SCTP; see [`super::sctp`]).
async fn sctp(from: &PodHandle, to: SocketAddr) -> ProbeOutcome {
    let v6 = to.is_ipv6();
    let created = from.netns.run_async(move || RawSctp::open(v6)).await;
    let socket = match created {
        Ok(Ok(fd)) => RawSctp::new(fd, v6),
        Ok(Err(errno)) => return from_io(&errno.into()),
        Err(error) => return ProbeOutcome::Error(error.to_string()),
    };
    let outcome = match socket {
        Ok(socket) => sctp::associate(&socket, to).await,
        Err(error) => return from_io(&error),
    };
    match outcome {
        Ok(Association::Established) => ProbeOutcome::Connected,
        Ok(Association::Aborted) => ProbeOutcome::Refused,
        Err(error) => from_io(&error),
    }
}

fn socket_port(socket: &UdpSocket) -> u16 {
    socket.local_addr().map_or(0, |addr| addr.port())
}

fn from_io(error: &io::Error) -> ProbeOutcome {
    match error.kind() {
        ErrorKind::ConnectionRefused => ProbeOutcome::Refused,
        ErrorKind::TimedOut => ProbeOutcome::TimedOut,
        _ => ProbeOutcome::Error(error.to_string()),
    }
}
