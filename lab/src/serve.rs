//! Servers inside pods: the far end of every probe.
//!
//! Sockets are made and bound inside the pod's namespace, then served from the caller's tokio
//! runtime. TCP accepts and closes (the handshake is the whole answer), UDP echoes each
//! datagram. SCTP, which this kernel lacks, is answered by the lab's own responder on a raw
//! socket ([`super::sctp`]): every pod runs one, so an INIT to a port the pod does not serve is
//! aborted as a real stack would. Everything is listening when [`serve`] returns, so a probe
//! right after is fair.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, OwnedFd},
    str::FromStr,
    time::Duration,
};

use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, sockopt,
};
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};

use super::{
    netns::{LabError, Result},
    sctp::{self, RawSctp},
    topology::PodHandle,
};

/// A transport protocol a `NetworkPolicy` port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Spelled as in the Kubernetes API (`protocol: TCP`).
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        })
    }
}

impl FromStr for Proto {
    type Err = LabError;

    /// Accepts any case, so `tcp` in a hand-written case file reads as `TCP`.
    fn from_str(input: &str) -> Result<Self> {
        match input.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Proto::Tcp),
            "UDP" => Ok(Proto::Udp),
            "SCTP" => Ok(Proto::Sctp),
            _ => Err(LabError::UnknownProto {
                input: input.to_owned(),
            }),
        }
    }
}

/// The running servers of one [`serve`] call; dropping it stops them and closes their sockets.
#[derive(Debug)]
pub struct ServerHandle {
    listening: Vec<(Proto, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// What is served, one entry per port and address family.
    pub fn listening(&self) -> &[(Proto, SocketAddr)] {
        &self.listening
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Serves `ports` in `pod` on `0.0.0.0` and, if the pod has IPv6, on `[::]` (v6-only, so the
/// two never collide). Must be called from inside a tokio runtime, which runs the servers.
pub fn serve(pod: &PodHandle, ports: &[(Proto, u16)]) -> Result<ServerHandle> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|source| LabError::NoRuntime {
        what: "lab::serve",
        source,
    })?;
    let v6 = pod.addrs.iter().any(IpAddr::is_ipv6);
    let mut binds = Vec::new();
    let mut sctp_ports = BTreeSet::new();
    for &(proto, port) in ports {
        if proto == Proto::Sctp {
            sctp_ports.insert(port);
            continue;
        }
        binds.push((proto, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))));
        if v6 {
            binds.push((proto, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))));
        }
    }
    // The SCTP responder's raw sockets, one per address family (false: IPv4, true: IPv6).
    let sctp_families: Vec<bool> = if v6 { vec![false, true] } else { vec![false] };

    let ns = pod.netns.name().to_owned();
    let to_bind = binds.clone();
    let families = sctp_families.clone();
    let (fds, raw_fds) = pod.netns.run(move || {
        let fds = to_bind
            .into_iter()
            .map(|(proto, addr)| {
                bound_socket(proto, addr).map_err(|(op, source)| LabError::Socket {
                    ns: ns.clone(),
                    op,
                    addr,
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let raw_fds = families
            .into_iter()
            .map(|v6| {
                RawSctp::open(v6).map_err(|source| LabError::Socket {
                    ns: ns.clone(),
                    op: "open a raw SCTP socket for",
                    addr: SocketAddr::new(unspecified(v6), 0),
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok::<_, LabError>((fds, raw_fds))
    })??;

    // Built before any task starts, so an error here stops the tasks already spawned.
    let mut handle = ServerHandle {
        listening: Vec::new(),
        tasks: Vec::new(),
    };
    for ((proto, addr), fd) in binds.into_iter().zip(fds) {
        let register = |source| LabError::Io {
            what: format!("pod {}: serve {proto} on {addr}", pod.key),
            source,
        };
        let task = match proto {
            Proto::Tcp => {
                let listener = TcpListener::from_std(fd.into()).map_err(register)?;
                runtime.spawn(accept_and_close(listener))
            }
            Proto::Udp => {
                let socket = UdpSocket::from_std(fd.into()).map_err(register)?;
                runtime.spawn(echo(socket))
            }
            Proto::Sctp => continue,
        };
        handle.tasks.push(task);
        handle.listening.push((proto, addr));
    }
    for (v6, fd) in sctp_families.into_iter().zip(raw_fds) {
        let any = unspecified(v6);
        let socket = RawSctp::new(fd, v6).map_err(|source| LabError::Io {
            what: format!("pod {}: answer SCTP on {any}", pod.key),
            source,
        })?;
        handle
            .tasks
            .push(runtime.spawn(sctp::respond(socket, sctp_ports.clone())));
        let served = sctp_ports.iter().map(|&port| SocketAddr::new(any, port));
        handle
            .listening
            .extend(served.map(|addr| (Proto::Sctp, addr)));
    }
    tracing::debug!(pod = %pod.key, listening = ?handle.listening, "serving");
    Ok(handle)
}

fn unspecified(v6: bool) -> IpAddr {
    if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    }
}

/// A non-blocking socket bound to `addr` (and listening, for TCP); on failure, the step that
/// failed.
fn bound_socket(
    proto: Proto,
    addr: SocketAddr,
) -> std::result::Result<OwnedFd, (&'static str, nix::Error)> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let kind = match proto {
        Proto::Udp => SockType::Datagram,
        Proto::Tcp | Proto::Sctp => SockType::Stream,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(family, kind, flags, None).map_err(|e| ("create a socket for", e))?;
    // A server restarted on the same port must not wait for TIME_WAIT to clear.
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| ("set SO_REUSEADDR on", e))?;
    match addr {
        SocketAddr::V4(v4) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => {
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)
                .map_err(|e| ("set IPV6_V6ONLY on", e))?;
            socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))
        }
    }
    .map_err(|e| ("bind", e))?;
    if proto == Proto::Tcp {
        let backlog = Backlog::new(1024).map_err(|e| ("listen on", e))?;
        socket::listen(&fd, backlog).map_err(|e| ("listen on", e))?;
    }
    Ok(fd)
}

/// Accepting is the answer a TCP probe waits for; the connection is closed at once.
async fn accept_and_close(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => drop(stream),
            Err(error) => {
                // E.g. out of descriptors: back off instead of spinning.
                tracing::debug!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Echoes every datagram to its sender.
async fn echo(socket: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, peer)) => {
                if let Err(error) = socket.send_to(&buf[..len], peer).await {
                    tracing::debug!(error = %error, %peer, "echo failed");
                }
            }
            Err(error) => {
                tracing::debug!(error = %error, "receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_read_and_print_as_in_the_kubernetes_api() -> Result<()> {
        for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
            assert_eq!(proto.to_string().parse::<Proto>()?, proto);
        }
        assert_eq!("tcp".parse::<Proto>()?, Proto::Tcp);
        assert_eq!(Proto::Sctp.to_string(), "SCTP");
        assert!(matches!(
            "ICMP".parse::<Proto>(),
            Err(LabError::UnknownProto { .. })
        ));
        Ok(())
    }
}
