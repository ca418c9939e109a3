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

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::Instant};

    use super::*;
    use crate::lab::{
        netns::{Result, require_root},
        serve::serve,
        topology::Topology,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test addresses are valid")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_probes_run_at_once_and_none_outlives_its_timeout() -> Result<()> {
        require_root();
        let mut topology = Topology::new()?;
        let node = topology.add_node("probe-1", 1)?;
        let a = topology.add_pod(&node, "default/pa", &[ip("10.244.80.10")])?;
        let b = topology.add_pod(&node, "default/pb", &[ip("10.244.80.11")])?;
        let _servers = serve(&b, &[(Proto::Tcp, 8080)])?;
        let to = SocketAddr::new(b.addrs[0], 8080);

        let started = Instant::now();
        let probes = (0..64).map(|_| probe(&a, to, Proto::Tcp, Duration::from_secs(3)));
        let outcomes = futures::future::join_all(probes).await;
        assert!(outcomes.iter().all(ProbeOutcome::succeeded), "{outcomes:?}");
        assert!(started.elapsed() < Duration::from_secs(3));

        // A socket that receives but never answers: the probe sees what a drop looks like.
        let silent = b.netns.run(|| std::net::UdpSocket::bind("0.0.0.0:9999"))?;
        let _silent = silent.map_err(|source| crate::lab::netns::LabError::Io {
            what: "bind the silent socket".into(),
            source,
        })?;
        let timeout = Duration::from_millis(700);
        let started = Instant::now();
        let outcome = probe(&a, SocketAddr::new(b.addrs[0], 9999), Proto::Udp, timeout).await;
        let took = started.elapsed();
        assert_eq!(outcome, ProbeOutcome::TimedOut);
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(200),
            "{took:?}"
        );

        // Nothing bound: the ICMP port unreachable reads as a refusal.
        let closed = probe(&a, SocketAddr::new(b.addrs[0], 9998), Proto::Udp, timeout).await;
        assert_eq!(closed, ProbeOutcome::Refused);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sctp_probes_complete_the_handshake_with_served_ports_only() -> Result<()> {
        require_root();
        let mut topology = Topology::new()?;
        let node = topology.add_node("probe-sctp", 3)?;
        let a = topology.add_pod(&node, "default/sa", &[ip("10.244.81.10")])?;
        let b = topology.add_pod(&node, "default/sb", &[ip("10.244.81.11")])?;
        let c = topology.add_pod(&node, "default/sc", &[ip("10.244.81.12")])?;
        // a serves SCTP too: its responder sees the replies meant for its probes and must
        // leave them alone.
        let _a = serve(&a, &[(Proto::Sctp, 80)])?;
        let _b = serve(&b, &[(Proto::Sctp, 80), (Proto::Sctp, 81)])?;
        let timeout = Duration::from_secs(2);

        // Many at once, from two pods: each probe picks out its own replies.
        let to = |port| SocketAddr::new(b.addrs[0], port);
        let probes = (0..16).flat_map(|i| {
            let port = if i % 2 == 0 { 80 } else { 81 };
            [
                probe(&a, to(port), Proto::Sctp, timeout),
                probe(&c, to(port), Proto::Sctp, timeout),
            ]
        });
        let outcomes = futures::future::join_all(probes).await;
        assert!(outcomes.iter().all(ProbeOutcome::succeeded), "{outcomes:?}");

        // A port b does not serve: b's responder aborts, as a stack without a listener does.
        let started = Instant::now();
        assert_eq!(
            probe(&a, to(82), Proto::Sctp, timeout).await,
            ProbeOutcome::Refused
        );
        assert!(started.elapsed() < timeout);
        // The same port over TCP is not served either: SCTP and TCP ports are apart.
        assert_eq!(
            probe(&a, to(80), Proto::Tcp, timeout).await,
            ProbeOutcome::Refused
        );
        // A pod that runs no responder at all never answers: the probe times out.
        let silent = probe(&b, SocketAddr::new(c.addrs[0], 80), Proto::Sctp, timeout).await;
        assert_eq!(silent, ProbeOutcome::TimedOut);
        Ok(())
    }
}
