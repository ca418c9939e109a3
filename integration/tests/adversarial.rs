//! The adversarial suite (issue #14): crafted packets against the real programs on the real
//! kernel. Each case builds a lab cluster (nodes, pods, external hosts) with the in-process
//! agent, sends frames it crafted byte by byte from inside a pod's (or an external host's, or a
//! node's) namespace through an `AF_PACKET` socket, and captures at the receiver's `eth0`,
//! opened before anything is sent:
//!
//! - the attack: no frame carrying its unique marker arrives;
//! - its control: the same path delivers what policy allows, so an empty capture means "dropped",
//!   never "the capture or the path was broken".
//!
//! Controls wait up to [`LIVE`]; attacks, sent after their path has shown to be live, are given
//! [`QUIET`].
//!
//! | module | issue item |
//! |---|---|
//! | `services` | 1: Service records planted by packets the node then drops |
//! | `icmp_errors` | 2: ICMP errors as a data channel |
//! | `spoofing` | 3: pod sources spoofed from outside the node |
//! | `tcp_state` | 4: TCP flags without a handshake, a closed tuple after a policy change |
//! | `echo` | 5: ICMP and ICMPv6 echo identifiers |
//! | `fragments` | 6: fragmented replies, orphan fragments, held headers |
//! | `ipv6` | 7: extension header chains, IPv4-mapped sources, neighbour discovery |
//! | `event_flood` | 8: a flood of denied packets hiding another pod's flow event |

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use palisade::{
    dataplane::{ConntrackSettings, Established, FlowSettings},
    k8s::{
        cluster::{Cluster, ObjectKey},
        fixtures::{apply_yaml, cluster, namespace, pod},
        manifest::Object,
    },
    node::NodeWorker,
};
use palisade_integration::{
    require_root,
    wire::{Capture, Port, mac_of},
};
use palisade_lab::{
    node::{self, Interface},
    services::service_ranges,
    topology::{NodeHandle, POD_IFNAME, PodHandle, Topology, link_ifname},
};

#[path = "adversarial/echo.rs"]
mod echo;
#[path = "adversarial/event_flood.rs"]
mod event_flood;
#[path = "adversarial/fragments.rs"]
mod fragments;
#[path = "adversarial/icmp_errors.rs"]
mod icmp_errors;
#[path = "adversarial/ipv6.rs"]
mod ipv6;
#[path = "adversarial/services.rs"]
mod services;
#[path = "adversarial/spoofing.rs"]
mod spoofing;
#[path = "adversarial/tcp_state.rs"]
mod tcp_state;

/// How long a control may take to arrive (neighbour resolution on a first packet included).
const LIVE: Duration = Duration::from_secs(2);
/// How long an attack is given to arrive, once its path has shown to be live.
const QUIET: Duration = Duration::from_millis(400);
/// Every lab pod is in this namespace.
const NS: &str = "x";

/// One host of the scenery: a pod (labelled `app: <name>`) or an external host, on node
/// `node` (1 or 2), with its addresses.
struct Host {
    name: &'static str,
    node: u8,
    addrs: &'static [&'static str],
    external: bool,
}

const fn pod_on(name: &'static str, node: u8, addrs: &'static [&'static str]) -> Host {
    Host {
        name,
        node,
        addrs,
        external: false,
    }
}

const fn external_on(name: &'static str, node: u8, addrs: &'static [&'static str]) -> Host {
    Host {
        name,
        node,
        addrs,
        external: true,
    }
}

/// A lab cluster with an in-process agent per node. Fields drop in order: the agents (their
/// programs detached) before the namespaces.
struct Lab {
    workers: Vec<NodeWorker>,
    #[expect(dead_code, reason = "held for its drop, which removes the namespaces")]
    topology: Topology,
    nodes: Vec<NodeHandle>,
    cluster: Cluster,
    hosts: BTreeMap<&'static str, PodHandle>,
    externals: Vec<&'static str>,
}

impl Lab {
    /// `nodes` nodes (`node-1`, `node-2`), the hosts, and `policies` (YAML) enforced.
    fn new(nodes: u8, hosts: &[Host], policies: &str) -> Self {
        Self::with_settings(
            nodes,
            hosts,
            policies,
            FlowSettings::default(),
            ConntrackSettings::default(),
        )
    }

    /// [`Self::new`] with the agents' flow settings (strict uplinks) and conntrack timeouts.
    fn with_settings(
        nodes: u8,
        hosts: &[Host],
        policies: &str,
        flows: FlowSettings,
        conntrack: ConntrackSettings,
    ) -> Self {
        require_root();
        let mut topology = Topology::new().expect("topology");
        let nodes: Vec<NodeHandle> = (1..=nodes)
            .map(|i| topology.add_node(&format!("node-{i}"), i).expect("node"))
            .collect();
        let mut objects: Vec<Object> = vec![namespace(NS).into()];
        let mut handles = BTreeMap::new();
        let mut externals = Vec::new();
        for host in hosts {
            let node = &nodes[usize::from(host.node - 1)];
            let addrs: Vec<IpAddr> = host.addrs.iter().map(|a| a.parse().unwrap()).collect();
            let key = format!("{NS}/{}", host.name);
            let handle = if host.external {
                externals.push(host.name);
                topology.add_external(node, &key, &addrs)
            } else {
                let mut p = pod(NS, host.name).label("app", host.name).on(&node.name);
                for a in host.addrs {
                    p = p.ip(a);
                }
                objects.push(p.into());
                topology.add_pod(node, &key, &addrs)
            }
            .expect("host");
            handles.insert(host.name, handle);
        }
        let workers = nodes
            .iter()
            .map(|n| {
                node::start_configured(
                    n,
                    &service_ranges(),
                    None,
                    Established::Keep,
                    flows,
                    conntrack,
                )
                .expect("agent")
            })
            .collect();
        let mut lab = Self {
            workers,
            topology,
            nodes,
            cluster: cluster(objects),
            hosts: handles,
            externals,
        };
        lab.apply(policies);
        lab
    }

    /// Applies `policies` (YAML; a policy of the same name is replaced) on every node.
    fn apply(&mut self, policies: &str) {
        if !policies.trim().is_empty() {
            apply_yaml(&mut self.cluster, policies);
        }
        self.sync();
    }

    fn sync(&self) {
        for (node, worker) in self.nodes.iter().zip(&self.workers) {
            let on_node = |h: &&PodHandle| h.node.name == node.name;
            let interfaces = self
                .hosts
                .iter()
                .filter(|(name, h)| on_node(h) && !self.externals.contains(*name))
                .map(|(name, h)| {
                    let interface = Interface {
                        ifname: h.host_ifname.clone(),
                        ifindex: h.host_ifindex,
                    };
                    (ObjectKey::new(NS, *name), interface)
                })
                .collect();
            let uplinks = self
                .nodes
                .iter()
                .filter(|other| other.name != node.name)
                .map(link_ifname)
                .chain(
                    self.hosts
                        .iter()
                        .filter(|(name, h)| on_node(h) && self.externals.contains(*name))
                        .map(|(_, h)| h.host_ifname.clone()),
                )
                .collect();
            let outcome = worker
                .sync(&self.cluster, interfaces, uplinks)
                .expect("sync");
            assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
            assert!(
                outcome.report.failures.is_empty(),
                "{:?}",
                outcome.report.failures
            );
        }
    }

    fn host(&self, name: &str) -> &PodHandle {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    fn v4(&self, name: &str) -> Ipv4Addr {
        self.host(name)
            .addrs
            .iter()
            .find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .expect("an IPv4 address")
    }

    fn v6(&self, name: &str) -> Ipv6Addr {
        self.host(name)
            .addrs
            .iter()
            .find_map(|a| match a {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            })
            .expect("an IPv6 address")
    }

    /// A host's `eth0`, sending to its node.
    fn port(&self, name: &str) -> Port {
        let h = self.host(name);
        Port::open(&h.netns, POD_IFNAME, mac_of(&h.node.netns, &h.host_ifname))
    }

    /// A capture of what reaches a host's `eth0`.
    fn capture(&self, name: &str) -> Capture {
        Capture::open(&self.host(name).netns, POD_IFNAME)
    }

    /// Node `from`'s link to node `to` (indices from 1), sending to `to`.
    fn node_port(&self, from: u8, to: u8) -> Port {
        let (from, to) = (
            &self.nodes[usize::from(from - 1)],
            &self.nodes[usize::from(to - 1)],
        );
        Port::open(
            &from.netns,
            &link_ifname(to),
            mac_of(&to.netns, &link_ifname(from)),
        )
    }

    fn node(&self, index: u8) -> &NodeHandle {
        &self.nodes[usize::from(index - 1)]
    }
}

/// A payload marker unique to one packet of one run: `PALISADE-ADV:<tag>:<pid>`.
fn marker(tag: &str) -> Vec<u8> {
    format!("PALISADE-ADV:{tag}:{}", std::process::id()).into_bytes()
}

/// The attacks of one test that got through, reported together at its end: one breach must
/// not hide whether the next attack of the same scenery gets through too.
#[derive(Default)]
struct Breaches(Vec<String>);

impl Breaches {
    /// Records `attack` if a frame carrying `m` reaches `at` within [`QUIET`].
    fn check(&mut self, at: &Capture, m: &[u8], attack: &str) {
        if at.sees(m, QUIET) {
            self.0.push(attack.to_owned());
        }
    }

    fn push(&mut self, attack: impl Into<String>) {
        self.0.push(attack.into());
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} attack(s) got through:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}
