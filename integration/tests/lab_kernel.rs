//! The lab's own building blocks on the real kernel: network namespaces, what a crashed run
//! leaves behind, the topology (nodes, pods, links), servers and probes. Needs root.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use palisade_integration::require_root;
use palisade_lab::{
    cleanup::clean_stale,
    netns::{LabError, NetNs, Result, run_prefix},
    probe::{ProbeOutcome, probe},
    serve::{Proto, serve},
    topology::Topology,
};

fn name(suffix: &str) -> String {
    format!("{}{suffix}", run_prefix())
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test addresses are valid")
}

/// Signal 0 checks existence; EPERM still means "exists, owned by someone else".
fn pid_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn only_network_sysctls_can_be_written() -> Result<()> {
    require_root();
    let ns = NetNs::create(&name("sysctl-guard"))?;
    for key in ["kernel/hostname", "net/../kernel/hostname"] {
        assert!(matches!(
            ns.sysctl(key, "x"),
            Err(LabError::NotNamespaced { .. })
        ));
    }
    Ok(())
}
#[test]
fn a_namespace_is_created_entered_configured_and_removed() -> Result<()> {
    require_root();
    let ns = NetNs::create(&name("life"))?;
    assert!(ns.path().exists());
    assert!(matches!(NetNs::create(ns.name()), Err(LabError::Io { .. })));

    let host_ns = fs::read_link("/proc/thread-self/ns/net").map_err(|source| LabError::Io {
        what: "read our netns".into(),
        source,
    })?;
    let inside = ns.run(|| fs::read_link("/proc/thread-self/ns/net"))?;
    let inside = inside.map_err(|source| LabError::Io {
        what: "read netns inside".into(),
        source,
    })?;
    assert_ne!(inside, host_ns, "run() must execute inside the namespace");

    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward");
    ns.sysctl("net/ipv4/ip_forward", "1")?;
    let ns_forward = ns.run(|| fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))?;
    assert_eq!(ns_forward.ok().as_deref(), Some("1\n"));
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok(),
        host_forward.ok(),
        "the host's sysctl must not change"
    );

    let opened = NetNs::open(ns.name())?;
    drop(opened);
    assert!(ns.path().exists(), "dropping an opened namespace keeps it");

    let path = ns.path().to_owned();
    ns.remove()?;
    ns.remove()?;
    assert!(!path.exists());
    Ok(())
}
#[tokio::test]
async fn run_async_enters_the_namespace_without_blocking_the_runtime() -> Result<()> {
    require_root();
    let ns = NetNs::create(&name("async"))?;
    let runs = (0..16).map(|_| ns.run_async(|| fs::read_link("/proc/thread-self/ns/net")));
    let links: Vec<_> = futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.map(|l| l.ok()))
        .collect::<Result<_>>()?;
    let expected = ns.run(|| fs::read_link("/proc/thread-self/ns/net").ok())?;
    assert!(expected.is_some());
    assert!(links.iter().all(|l| *l == expected));
    Ok(())
}

#[test]
fn clean_stale_removes_namespaces_of_dead_runs_only() -> Result<()> {
    require_root();
    let dead_pid = (900_000..999_999)
        .rev()
        .find(|&pid| !pid_alive(pid))
        .expect("some PID below pid_max is free");
    let stale = NetNs::create(&format!("pal{dead_pid}-stale"))?;
    let stale_path = stale.path().to_owned();
    // Simulate a crash: the namespace outlives the run that made it.
    std::mem::forget(stale);
    let live = NetNs::create(&name("live"))?;

    clean_stale()?;
    // Other tests of this process may clean concurrently: check the effect, not the count.
    assert!(!stale_path.exists(), "stale namespace still present");
    assert!(live.path().exists(), "a live run's namespace was removed");
    Ok(())
}

#[tokio::test]
async fn pods_on_a_node_reach_each_other_until_one_is_removed() -> Result<()> {
    require_root();
    let mut topology = Topology::new()?;
    let node = topology.add_node("topo-v4", 1)?;
    let a = topology.add_pod(&node, "default/a", &[ip("10.244.77.10")])?;
    let b = topology.add_pod(&node, "default/b", &[ip("10.244.77.11")])?;
    assert_ne!(a.host_ifindex, b.host_ifindex);
    let paths: Vec<PathBuf> = [&node.netns, &a.netns, &b.netns]
        .iter()
        .map(|ns| ns.path().to_owned())
        .collect();
    let _servers = serve(&b, &[(Proto::Tcp, 8080), (Proto::Udp, 5353)])?;
    let b_at = |port| SocketAddr::new(b.addrs[0], port);

    assert_eq!(
        probe(&a, b_at(8080), Proto::Tcp, TIMEOUT).await,
        ProbeOutcome::Connected
    );
    assert_eq!(
        probe(&a, b_at(5353), Proto::Udp, TIMEOUT).await,
        ProbeOutcome::Connected
    );
    assert_eq!(
        probe(&a, b_at(8081), Proto::Tcp, TIMEOUT).await,
        ProbeOutcome::Refused
    );

    topology.remove_pod("default/b")?;
    assert!(!b.netns.path().exists());
    assert!(topology.pod("default/b").is_none());
    // The server still holds b's namespace alive: only the unplugged veth can stop this.
    let after = probe(&a, b_at(8080), Proto::Tcp, TIMEOUT).await;
    assert!(!after.succeeded(), "probe after removal: {after}");
    assert!(matches!(
        topology.remove_pod("default/b"),
        Err(LabError::UnknownPod { .. })
    ));

    drop(topology);
    for path in paths {
        assert!(!path.exists(), "{} outlived its topology", path.display());
    }
    Ok(())
}
#[tokio::test]
async fn dual_stack_pods_reach_each_other_over_ipv6() -> Result<()> {
    require_root();
    let mut topology = Topology::new()?;
    let node = topology.add_node("topo-v6", 2)?;
    let a = topology.add_pod(
        &node,
        "default/a6",
        &[ip("10.244.78.10"), ip("fd00:10:244:78::10")],
    )?;
    let b = topology.add_pod(
        &node,
        "default/b6",
        &[ip("10.244.78.11"), ip("fd00:10:244:78::11")],
    )?;
    let servers = serve(
        &b,
        &[(Proto::Tcp, 8080), (Proto::Udp, 5353), (Proto::Sctp, 7777)],
    )?;
    assert_eq!(
        servers.listening().len(),
        6,
        "TCP, UDP and SCTP on v4 and v6"
    );
    for addr in &b.addrs {
        let tcp = probe(&a, SocketAddr::new(*addr, 8080), Proto::Tcp, TIMEOUT).await;
        let udp = probe(&a, SocketAddr::new(*addr, 5353), Proto::Udp, TIMEOUT).await;
        let sctp = probe(&a, SocketAddr::new(*addr, 7777), Proto::Sctp, TIMEOUT).await;
        assert_eq!(
            (tcp, udp, sctp),
            (
                ProbeOutcome::Connected,
                ProbeOutcome::Connected,
                ProbeOutcome::Connected
            ),
            "to {addr}"
        );
    }
    Ok(())
}
#[test]
fn names_and_indexes_are_checked() -> Result<()> {
    require_root();
    let mut topology = Topology::new()?;
    assert!(matches!(
        topology.add_node("topo-bad", 0),
        Err(LabError::InvalidNodeIndex { index: 0 })
    ));
    let node = topology.add_node("topo-dup", 3)?;
    assert_eq!(node.addr_v4(), Ipv4Addr::new(10, 244, 0, 3));
    assert_eq!(node.addr_v6(), ip("fd00:10:244::3"));
    assert!(matches!(
        topology.add_node("topo-dup", 4),
        Err(LabError::DuplicateNode { .. })
    ));
    topology.add_pod(&node, "x/p", &[ip("10.244.79.10")])?;
    assert!(matches!(
        topology.add_pod(&node, "x/p", &[ip("10.244.79.11")]),
        Err(LabError::DuplicatePod { .. })
    ));
    Ok(())
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
    let _silent = silent.map_err(|source| LabError::Io {
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

#[test]
fn serving_needs_a_runtime() -> Result<()> {
    require_root();
    let mut topology = Topology::new()?;
    let node = topology.add_node("serve-rt", 41)?;
    let pod = topology.add_pod(&node, "serve-rt/a", &["10.244.41.10".parse().unwrap()])?;
    assert!(matches!(
        serve(&pod, &[(Proto::Tcp, 80)]),
        Err(LabError::NoRuntime { .. })
    ));
    Ok(())
}
