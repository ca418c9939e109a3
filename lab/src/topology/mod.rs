//! A cluster of network namespaces: nodes, and pods wired to their node the way Calico wires
//! them, so the node is a router and every pod-to-pod packet crosses the node's host-side veth
//! (where the dataplane's hooks sit).
//!
//! ```text
//!  pod ns pal<PID>-p<N>                 node ns pal<PID>-<name>
//!  eth0: 10.244.x.y/32, fd00:10:244::../128     pv<N>: 169.254.1.1/32, fe80::1/64
//!  default via 169.254.1.1 / fe80::1  <──veth──>  10.244.x.y/32 dev pv<N> src <node addr>
//!                                                lo: 10.244.0.<index>/32
//! ```
//!
//! Nodes are joined pairwise by a veth (`to-<other node>` on each side), routed without
//! encapsulation: each node holds a route to every pod of the other nodes through the link,
//! next hop the other node's address (`10.244.0.<index>`, or `fe80::<index>` on the link for
//! IPv6). Hosts outside the cluster are wired to a node like pods (see [`Topology::add_pod`]):
//! what makes them external is only that no policy program judges them as endpoints.
//!
//! Every netlink request is sent from a socket created inside the namespace it changes: one
//! batch of requests is one [`NetNs::run`] with a private current-thread runtime.

mod netlink;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use rtnetlink::{
    LinkMessageBuilder, LinkUnspec, LinkVeth,
    packet_route::link::{InfoData, InfoVeth},
};

use super::{
    cleanup::clean_stale,
    netns::{LabError, NetNs, Result, run_prefix},
};

use self::netlink::{link_nodes, netlink, route_to};
/// The pods' gateway, as in Calico: the node answers for it on every host-side veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 gateway, link-local on every host-side veth.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Name of the pod side of its veth.
pub const POD_IFNAME: &str = "eth0";

/// Pod numbers are process-wide so that topologies living side by side (tests) never pick the
/// same namespace name.
static NEXT_POD: AtomicU32 = AtomicU32::new(1);
/// Topologies made by this process so far (see [`Topology::new`]).
static NEXT_TOPOLOGY: AtomicU32 = AtomicU32::new(0);

/// A node: a namespace that routes between its pods. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    pub name: String,
    pub index: u8,
    pub netns: Arc<NetNs>,
}

impl NodeHandle {
    /// The node's IPv4 address, `10.244.0.<index>`.
    pub fn addr_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, 0, self.index)
    }

    /// The node's IPv6 address, `fd00:10:244::<index>`.
    pub fn addr_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, u16::from(self.index))
    }

    /// The node's address of the same family as `ip`.
    pub fn addr_like(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => self.addr_v4().into(),
            IpAddr::V6(_) => self.addr_v6().into(),
        }
    }
}

/// A pod: its namespace and the host side of its veth. Cheap enough to clone.
#[derive(Clone, Debug)]
pub struct PodHandle {
    pub key: String,
    pub node: NodeHandle,
    pub netns: Arc<NetNs>,
    /// `pv<N>`, in the node's namespace.
    pub host_ifname: String,
    /// The ifindex of `host_ifname` in the node's namespace (where the dataplane attaches).
    pub host_ifindex: u32,
    pub addrs: Vec<IpAddr>,
}

/// Owns every namespace it creates and removes them all when dropped, pods before nodes.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    nodes: Vec<NodeHandle>,
    pods: BTreeMap<String, PodHandle>,
}

/// Name of the interface in `from`'s namespace that links it to node `to`.
pub fn link_ifname(to: &NodeHandle) -> String {
    format!("to-{}", to.name)
}

impl Topology {
    /// Starts an empty cluster, first removing namespaces left by crashed runs.
    pub fn new() -> Result<Self> {
        // A leftover that will not go is harmless (its name carries a dead PID): say so and
        // go on.
        match clean_stale() {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed stale lab network namespaces"),
            Err(error) => tracing::warn!(%error, "could not remove a stale lab namespace"),
        }
        // The first topology of a process names its nodes `pal<PID>-<name>`; later ones (tests
        // that build several side by side) `pal<PID>-t<N>-<name>`, so node names never clash.
        let number = NEXT_TOPOLOGY.fetch_add(1, Ordering::Relaxed);
        let prefix = if number == 0 {
            run_prefix()
        } else {
            format!("{}t{number}-", run_prefix())
        };
        Ok(Self {
            prefix,
            nodes: Vec::new(),
            pods: BTreeMap::new(),
        })
    }

    pub fn nodes(&self) -> &[NodeHandle] {
        &self.nodes
    }

    pub fn pod(&self, key: &str) -> Option<&PodHandle> {
        self.pods.get(key)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodHandle> {
        self.pods.values()
    }

    /// Adds a node `pal<PID>-<name>` that forwards, has no reverse-path filter, and holds
    /// `10.244.0.<index>/32` and `fd00:10:244::<index>/128` on `lo`.
    ///
    /// On `lo` rather than a dummy interface: the lab kernels are built without
    /// `CONFIG_DUMMY`, and a local address routes the same wherever it sits.
    pub fn add_node(&mut self, name: &str, index: u8) -> Result<NodeHandle> {
        if index == 0 || index == 255 {
            return Err(LabError::InvalidNodeIndex { index });
        }
        if self.nodes.iter().any(|node| node.name == name) {
            return Err(LabError::DuplicateNode {
                name: name.to_owned(),
            });
        }
        // Dropped (and so removed) on any error below, until it is pushed to `self.nodes`.
        let netns = Arc::new(NetNs::create(&format!("{}{name}", self.prefix))?);
        let node = NodeHandle {
            name: name.to_owned(),
            index,
            netns,
        };
        node.netns.sysctls(&[
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            // The effective rp_filter is max(all, device), and devices copy `default`, which a
            // new namespace inherits from the host: clear both so forwarded pod traffic is kept.
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
            // IPv6 addresses usable at once, including the veths' link-local ones.
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
        ])?;
        let (v4, v6) = (node.addr_v4(), node.addr_v6());
        netlink(&node.netns, move |nl| async move {
            let index = nl.set_up_by_name("lo").await?;
            nl.add_addr(index, v4.into(), 32).await?;
            nl.add_addr(index, v6.into(), 128).await
        })?;
        let others: Vec<NodeHandle> = self.nodes.clone();
        for other in &others {
            link_nodes(&node, other)?;
        }
        self.nodes.push(node.clone());
        // Pods already on other nodes become reachable from this one.
        let existing: Vec<PodHandle> = self.pods.values().cloned().collect();
        for pod in existing {
            route_to(&node, &pod.node, pod.addrs.clone())?;
        }
        tracing::debug!(node = name, netns = node.netns.name(), "added node");
        Ok(node)
    }

    /// Adds a pod `pal<PID>-p<N>` on `node`, with `addrs` (/32 or /128 each) on its `eth0`;
    /// its host-side veth is `pv<N>`.
    pub fn add_pod(&mut self, node: &NodeHandle, key: &str, addrs: &[IpAddr]) -> Result<PodHandle> {
        self.add_host(node, key, addrs, "pv")
    }

    /// Adds a host outside the cluster, wired like a pod but with a host-side veth named
    /// `xv<N>`: not a pod interface (`palisade agent --pod-interface-prefix pv`), an uplink.
    pub fn add_external(
        &mut self,
        node: &NodeHandle,
        key: &str,
        addrs: &[IpAddr],
    ) -> Result<PodHandle> {
        self.add_host(node, key, addrs, "xv")
    }

    fn add_host(
        &mut self,
        node: &NodeHandle,
        key: &str,
        addrs: &[IpAddr],
        ifname_prefix: &str,
    ) -> Result<PodHandle> {
        if self.pods.contains_key(key) {
            return Err(LabError::DuplicatePod {
                key: key.to_owned(),
            });
        }
        let number = NEXT_POD.fetch_add(1, Ordering::Relaxed);
        let netns = Arc::new(NetNs::create(&format!("{}p{number}", self.prefix))?);
        // Before the veth arrives: its per-device settings are copied from `default`.
        netns.sysctls(&[
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
        ])?;
        let host_ifname = format!("{ifname_prefix}{number}");
        let has_v4 = addrs.iter().any(IpAddr::is_ipv4);
        let has_v6 = addrs.iter().any(IpAddr::is_ipv6);

        // Node side: the veth (its peer born in the pod namespace as eth0), the gateway
        // addresses, and a route per pod address.
        let pod_fd = netns.fd()?;
        let (ifname, pod_addrs, node_handle) = (host_ifname.clone(), addrs.to_vec(), node.clone());
        let host_ifindex = netlink(&node.netns, move |nl| async move {
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(POD_IFNAME.to_owned())
                .setns_by_fd(pod_fd.as_raw_fd())
                .build();
            let veth = LinkVeth::new(&ifname, POD_IFNAME)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .up()
                .build();
            let what = format!("add veth {ifname} (peer {POD_IFNAME} in the pod namespace)");
            nl.run(what, nl.handle.link().add(veth).execute()).await?;
            // The request is done; the pod namespace is held by its mount, not by this fd.
            drop(pod_fd);
            let index = nl.index_of(&ifname).await?;
            if has_v4 {
                nl.add_addr(index, GATEWAY_V4.into(), 32).await?;
            }
            if has_v6 {
                nl.add_addr(index, GATEWAY_V6.into(), 64).await?;
            }
            for addr in pod_addrs {
                nl.add_host_route(index, addr, Some(node_handle.addr_like(addr)))
                    .await?;
            }
            Ok(index)
        })?;

        // Pod side: addresses on eth0, the gateway on-link, default routes through it.
        let pod_addrs = addrs.to_vec();
        netlink(&netns, move |nl| async move {
            nl.set_up_by_name("lo").await?;
            let eth0 = nl.set_up_by_name(POD_IFNAME).await?;
            for &addr in &pod_addrs {
                nl.add_addr(eth0, addr, if addr.is_ipv4() { 32 } else { 128 })
                    .await?;
            }
            // The first address of each family is the pod's source address.
            let v4 = pod_addrs.iter().find_map(|addr| match addr {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            });
            let v6 = pod_addrs.iter().find_map(|addr| match addr {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            });
            if let Some(src) = v4 {
                nl.add_host_route(eth0, GATEWAY_V4.into(), None).await?;
                nl.add_default_route_v4(eth0, src).await?;
            }
            if let Some(src) = v6 {
                // fe80::1 is on-link through the /64 the kernel gives every link-local.
                nl.add_default_route_v6(eth0, src).await?;
            }
            Ok(())
        })?;

        // Every other node routes to the pod through the link to its node.
        for other in self.nodes.iter().filter(|n| n.name != node.name) {
            route_to(other, node, addrs.to_vec())?;
        }

        let pod = PodHandle {
            key: key.to_owned(),
            node: node.clone(),
            netns,
            host_ifname,
            host_ifindex,
            addrs: addrs.to_vec(),
        };
        self.pods.insert(key.to_owned(), pod.clone());
        tracing::debug!(pod = key, node = %node.name, netns = pod.netns.name(), "added pod");
        Ok(pod)
    }

    /// Removes a pod: its veth first (so its routes go at once, even while sockets of a server
    /// still hold the pod namespace alive), then its namespace.
    pub fn remove_pod(&mut self, key: &str) -> Result<()> {
        let pod = self.pods.remove(key).ok_or_else(|| LabError::UnknownPod {
            key: key.to_owned(),
        })?;
        let (index, ifname) = (pod.host_ifindex, pod.host_ifname.clone());
        let unplugged = netlink(&pod.node.netns, move |nl| async move {
            let what = format!("delete veth {ifname}");
            nl.run(what, nl.handle.link().del(index).execute()).await
        });
        let mut unrouted = Ok(());
        for other in self.nodes.iter().filter(|n| n.name != pod.node.name) {
            let addrs = pod.addrs.clone();
            let result = netlink(&other.netns, move |nl| async move {
                for addr in addrs {
                    nl.del_route(addr).await?;
                }
                Ok(())
            });
            unrouted = unrouted.and(result);
        }
        let removed = pod.netns.remove();
        unplugged.and(unrouted).and(removed)
    }

    /// Removes every namespace, pods first. Tries them all, then reports the first failure.
    pub fn teardown(&mut self) -> Result<()> {
        let pods = std::mem::take(&mut self.pods)
            .into_values()
            .map(|pod| pod.netns);
        let nodes = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(|node| node.netns);
        let mut first_error = None;
        for netns in pods.chain(nodes) {
            if let Err(error) = netns.remove() {
                tracing::warn!(netns = netns.name(), error = ?error, "could not remove lab namespace");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Topology {
    /// Synchronous on purpose: it must run on every exit path, async or not, panics included.
    fn drop(&mut self) {
        // Failures were logged one by one in teardown.
        let _ = self.teardown();
    }
}
