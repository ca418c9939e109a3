//! Flows survive policy updates and agent restarts: a TCP and a UDP flow that every policy
//! version allows keep running while 100 policy versions are applied and the agent is killed
//! and restarted twice; not one of their packets is lost, and not one packet of a flow that
//! every version denies gets through.
//!
//! Real kernel, real programs, real namespaces: a node, a client, a server and an intruder.
//! Every version changes both pods' rules (so each update swaps their rule sets, see
//! `dataplane::sync`), and the agent is "killed" the way `kill -9` would end it: no detaching,
//! no cleanup; the pinned programs keep enforcing until the next agent adopts them.
//!
//! Loss is counted, not inferred: every UDP datagram carries a sequence number and must come
//! back; the TCP connection must see no retransmission (`TCP_INFO`) - a dropped segment would be
//! retransmitted, so zero retransmissions means zero TCP packets lost.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    mem,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use palisade::{
    dataplane::Established,
    k8s::cluster::{Cluster, ObjectKey},
    k8s::fixtures::{apply_yaml, apps},
};
use palisade_lab::{
    node::{self, Interface},
    pins::PinRoot,
    topology::{PodHandle, Topology},
};

const CLIENT: &str = "10.244.60.10";
const SERVER: &str = "10.244.60.11";
const INTRUDER: &str = "10.244.60.12";
const TCP_PORT: u16 = 7000;
const UDP_PORT: u16 = 7001;
const VERSIONS: usize = 100;
/// Versions after which the agent is killed and started again.
const RESTARTS: [usize; 2] = [33, 66];

use palisade_integration::require_root;

/// Policy version `k`: the steady rules (client -> server on TCP 7000 and UDP 7001) plus
/// rules that change with every version, in both directions.
fn policies(k: usize) -> String {
    let varying_egress = if k.is_multiple_of(2) {
        format!(
            "    - to:\n        - ipBlock:\n            cidr: 198.51.100.{}/32\n      ports:\n        - port: {}\n",
            k % 250,
            9000 + k
        )
    } else {
        format!(
            "    - ports:\n        - port: {}\n          endPort: {}\n",
            9000 + k,
            9100 + k
        )
    };
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: server
  namespace: x
spec:
  podSelector:
    matchLabels:
      app: server
  ingress:
    - from:
        - podSelector:
            matchLabels:
              app: client
      ports:
        - port: {TCP_PORT}
        - protocol: UDP
          port: {UDP_PORT}
    - from:
        - ipBlock:
            cidr: 192.0.2.{block}/32
      ports:
        - port: {port}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: client
  namespace: x
spec:
  podSelector:
    matchLabels:
      app: client
  policyTypes: [Egress]
  egress:
    - to:
        - podSelector:
            matchLabels:
              app: server
      ports:
        - port: {TCP_PORT}
        - protocol: UDP
          port: {UDP_PORT}
{varying_egress}"#,
        block = k % 250,
        port = 8000 + k,
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test addresses are valid")
}

/// Retransmitted segments of a TCP socket's lifetime.
fn total_retransmissions(stream: &TcpStream) -> u32 {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = mem::zeroed();
        let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "getsockopt(TCP_INFO)");
        info.tcpi_total_retrans
    }
}

fn in_netns<T: Send + 'static>(pod: &PodHandle, f: impl FnOnce() -> T + Send + 'static) -> T {
    pod.netns.run(f).expect("enter the pod's namespace")
}

#[test]
fn flows_survive_100_policy_updates_and_two_agent_restarts() {
    require_root();
    let mut topology = Topology::new().expect("topology");
    let node = topology.add_node("node-1", 1).expect("node");
    let client = topology
        .add_pod(&node, "x/client", &[ip(CLIENT)])
        .expect("client");
    let server = topology
        .add_pod(&node, "x/server", &[ip(SERVER)])
        .expect("server");
    let intruder = topology
        .add_pod(&node, "x/intruder", &[ip(INTRUDER)])
        .expect("intruder");
    let mut pins = PinRoot::new();
    let pin_dir = pins.node(&node.netns);

    let interfaces: BTreeMap<ObjectKey, Interface> = [&client, &server, &intruder]
        .iter()
        .map(|p| {
            let (ns, name) = p.key.split_once('/').expect("ns/name");
            (
                ObjectKey::new(ns, name),
                Interface {
                    ifname: p.host_ifname.clone(),
                    ifindex: p.host_ifindex,
                },
            )
        })
        .collect();
    let mut cluster = apps(
        "x",
        &[
            ("client", CLIENT),
            ("server", SERVER),
            ("intruder", INTRUDER),
        ],
    );
    let apply = |cluster: &mut Cluster, k: usize| apply_yaml(cluster, &policies(k));
    apply(&mut cluster, 0);
    let mut agent =
        node::start(&node, &[], Some(pin_dir.clone()), Established::Keep).expect("agent");
    agent
        .sync(&cluster, interfaces.clone(), Vec::new())
        .expect("first sync");

    // The server: TCP echo, UDP echo; it counts what arrives from the intruder.
    let stop = Arc::new(AtomicBool::new(false));
    let from_intruder = Arc::new(AtomicU64::new(0));
    let listener =
        in_netns(&server, || TcpListener::bind((ip(SERVER), TCP_PORT))).expect("bind TCP");
    let udp_server =
        in_netns(&server, || UdpSocket::bind((ip(SERVER), UDP_PORT))).expect("bind UDP");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 8];
                while stream.read_exact(&mut buf).is_ok() {
                    if stream.write_all(&buf).is_err() {
                        return;
                    }
                }
            });
        }
    });
    {
        let from_intruder = Arc::clone(&from_intruder);
        udp_server
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp_server.recv_from(&mut buf) {
                    if from.ip() == ip(INTRUDER) {
                        from_intruder.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = udp_server.send_to(&buf[..n], from);
                }
            }
        });
    }

    // The allowed flows, opened before the first update.
    let server_tcp = SocketAddr::new(ip(SERVER), TCP_PORT);
    let server_udp = SocketAddr::new(ip(SERVER), UDP_PORT);
    let stream = in_netns(&client, move || TcpStream::connect(server_tcp)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let udp = in_netns(&client, || UdpSocket::bind((ip(CLIENT), 0))).expect("bind client");
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let round_trips = Arc::new(AtomicU64::new(0));
    let tcp_thread = {
        let (stop, round_trips) = (Arc::clone(&stop), Arc::clone(&round_trips));
        let mut stream = stream.try_clone().expect("clone");
        thread::spawn(move || -> Result<(), String> {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                stream
                    .write_all(&seq.to_be_bytes())
                    .map_err(|e| format!("TCP write {seq}: {e}"))?;
                let mut back = [0u8; 8];
                stream
                    .read_exact(&mut back)
                    .map_err(|e| format!("TCP read {seq}: {e}"))?;
                if u64::from_be_bytes(back) != seq {
                    return Err(format!("TCP echo out of order at {seq}"));
                }
                seq += 1;
                round_trips.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    };
    let sent = Arc::new(AtomicU64::new(0));
    let udp_sender = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let udp = udp.try_clone().expect("clone");
        thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                udp.send_to(&seq.to_be_bytes(), server_udp)
                    .expect("UDP send");
                seq += 1;
                sent.store(seq, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let received = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let udp_receiver = {
        let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
        thread::spawn(move || {
            let mut buf = [0u8; 8];
            // Keeps reading a little after `stop`, for datagrams in flight.
            let mut idle = 0;
            while idle < 5 {
                match udp.recv(&mut buf) {
                    Ok(8) => {
                        received
                            .lock()
                            .expect("lock")
                            .insert(u64::from_be_bytes(buf));
                        idle = 0;
                    }
                    _ if stop.load(Ordering::Relaxed) => idle += 1,
                    _ => {}
                }
            }
        })
    };
    // The denied flows: UDP datagrams and TCP connection attempts from the intruder.
    let intruder_sent = Arc::new(AtomicU64::new(0));
    let intruder_connected = Arc::new(AtomicU64::new(0));
    let intruder_thread = {
        let (stop, sent, connected) = (
            Arc::clone(&stop),
            Arc::clone(&intruder_sent),
            Arc::clone(&intruder_connected),
        );
        let socket = in_netns(&intruder, || UdpSocket::bind((ip(INTRUDER), 0))).expect("bind");
        let intruder = intruder.clone();
        thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = socket.send_to(&round.to_be_bytes(), server_udp);
                sent.fetch_add(1, Ordering::Relaxed);
                if round.is_multiple_of(20) {
                    let attempt = in_netns(&intruder, move || {
                        TcpStream::connect_timeout(&server_tcp, Duration::from_millis(300))
                    });
                    if attempt.is_ok() {
                        connected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                round += 1;
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // 100 versions, two restarts.
    let policy_drops = |agent: &palisade::node::NodeWorker| -> u64 {
        agent
            .drops()
            .expect("drops")
            .iter()
            .filter(|(name, _)| name.starts_with("policy-"))
            .map(|(_, n)| n)
            .sum()
    };
    for k in 1..=VERSIONS {
        apply(&mut cluster, k);
        agent
            .sync(&cluster, interfaces.clone(), Vec::new())
            .unwrap_or_else(|e| panic!("sync of version {k}: {e}"));
        if RESTARTS.contains(&k) {
            let before = policy_drops(&agent);
            agent.kill();
            // Nobody home: the pinned programs go on alone.
            thread::sleep(Duration::from_millis(300));
            agent =
                node::start(&node, &[], Some(pin_dir.clone()), Established::Keep).expect("restart");
            let report = agent
                .sync(&cluster, interfaces.clone(), Vec::new())
                .expect("sync after restart");
            // The intruder kept sending while no agent ran: the programs kept dropping it, and
            // the counters (pinned too) kept counting.
            let after = policy_drops(&agent);
            assert!(
                after > before,
                "no policy drop counted while the agent was down (version {k}: {before} then {after}; {:?})",
                agent.drops()
            );
            eprintln!(
                "restart after version {k}: {} writes, {} deletes, {} endpoints switched",
                report.report.writes, report.report.deletes, report.report.swaps
            );
        }
        thread::sleep(Duration::from_millis(20));
    }

    stop.store(true, Ordering::Relaxed);
    tcp_thread
        .join()
        .expect("TCP thread")
        .expect("the TCP flow ran throughout");
    udp_sender.join().expect("UDP sender");
    udp_receiver.join().expect("UDP receiver");
    intruder_thread.join().expect("intruder");

    let sent = sent.load(Ordering::Relaxed);
    let received = received.lock().expect("lock").len() as u64;
    let round_trips = round_trips.load(Ordering::Relaxed);
    let retransmissions = total_retransmissions(&stream);
    eprintln!(
        "UDP {received}/{sent} echoed; TCP {round_trips} round trips, {retransmissions} retransmissions; intruder sent {} datagrams, {} connections got through, {} datagrams arrived",
        intruder_sent.load(Ordering::Relaxed),
        intruder_connected.load(Ordering::Relaxed),
        from_intruder.load(Ordering::Relaxed),
    );
    assert!(sent > 500, "the UDP flow ran ({sent} datagrams)");
    assert_eq!(received, sent, "UDP datagrams of an allowed flow were lost");
    assert!(
        round_trips > 500,
        "the TCP flow ran ({round_trips} round trips)"
    );
    assert_eq!(
        retransmissions, 0,
        "TCP segments of an allowed flow were lost"
    );
    assert!(intruder_sent.load(Ordering::Relaxed) > 100);
    assert_eq!(
        from_intruder.load(Ordering::Relaxed),
        0,
        "denied datagrams got through"
    );
    assert_eq!(
        intruder_connected.load(Ordering::Relaxed),
        0,
        "a denied connection got through"
    );
    drop(agent);
    drop(pins);
}
