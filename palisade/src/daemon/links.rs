//! The node's interfaces, over rtnetlink: which interface leads to each local pod (the route
//! to its address, as the CNI installed it), which pod interfaces belong to no known pod yet,
//! which interfaces are uplinks, and the node's own addresses. Link and route changes are
//! reported as they happen, so a new pod interface gets its programs at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::OwnedFd,
    time::Instant,
};

use futures::{StreamExt as _, TryStreamExt as _};
use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{
    Handle, MulticastGroup, RouteMessageBuilder,
    packet_route::{
        address::AddressAttribute,
        link::{LinkAttribute, LinkFlags},
        route::{RouteAddress, RouteAttribute, RouteType},
    },
};
use tokio::sync::mpsc;

use super::watch::Change;
use crate::{k8s::cluster::ObjectKey, node::Interface};

/// The main routing table.
const MAIN_TABLE: u32 = 254;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("netlink: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

/// What the node's interfaces say about its pods.
#[derive(Debug, Default)]
pub struct Discovery {
    pub interfaces: BTreeMap<ObjectKey, Interface>,
    /// Local pods with addresses whose route leads to no pod interface (yet).
    pub missing: Vec<ObjectKey>,
    /// Pod interfaces no known pod's route leads to.
    pub unknown: Vec<String>,
    /// Every other interface but loopback.
    pub uplinks: Vec<String>,
}

pub struct Links {
    handle: Handle,
    prefixes: Vec<String>,
}

impl Links {
    /// Opens two netlink sockets in `netns` (or the calling thread's namespace): one subscribed
    /// to link and route changes, which are sent to `changes`, and one for the requests.
    /// Must run inside the runtime.
    ///
    /// Not one socket for both: a notification carries the sequence number of the request
    /// that caused it, made by whoever changed the route (a CNI plugin adding a pod's route),
    /// and one that matched a request of ours in flight was taken as its answer, failing it
    /// ("unexpected message": an agent that exited at start-up while a node's pods were being
    /// wired, `palisade-lab load`, 2026-12-07).
    pub fn open(
        netns: Option<&OwnedFd>,
        prefixes: Vec<String>,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Result<Self, LinkError> {
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ];
        let open = move || {
            Ok::<_, std::io::Error>((
                rtnetlink::new_multicast_connection(&groups)?,
                rtnetlink::new_connection()?,
            ))
        };
        let opened = match netns {
            None => open(),
            // A socket belongs to the namespace it was created in: create it on a thread that
            // entered the namespace, then use it from anywhere.
            Some(fd) => {
                let fd = fd.try_clone().map_err(|source| LinkError::Io {
                    what: "duplicating the namespace descriptor",
                    source,
                })?;
                let runtime = tokio::runtime::Handle::current();
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || {
                            let _guard = runtime.enter();
                            setns(&fd, CloneFlags::CLONE_NEWNET)
                                .map_err(std::io::Error::from)
                                .and_then(|()| open())
                        })
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("netlink thread panicked")))
                })
            }
        };
        let ((events, _, mut messages), (connection, handle, _)) =
            opened.map_err(|source| LinkError::Io {
                what: "opening a route socket",
                source,
            })?;
        tokio::spawn(events);
        tokio::spawn(connection);
        tokio::spawn(async move {
            while messages.next().await.is_some() {
                let change = Change {
                    at: Instant::now(),
                    api: false,
                    object: None,
                    version: None,
                };
                if changes.send(change).is_err() {
                    return;
                }
            }
        });
        Ok(Self { handle, prefixes })
    }

    fn is_pod_interface(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Interfaces by index: name, loopback.
    async fn links(&self) -> Result<BTreeMap<u32, (String, bool)>, LinkError> {
        let mut links = BTreeMap::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(link) = stream
            .try_next()
            .await
            .map_err(|source| LinkError::Netlink {
                what: "listing links",
                source,
            })?
        {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(name) = name {
                let lo = link.header.flags.contains(LinkFlags::Loopback);
                links.insert(link.header.index, (name, lo));
            }
        }
        Ok(links)
    }

    /// Unicast routes of the main table: destination and output interface.
    async fn routes(&self) -> Result<Vec<(IpNet, u32)>, LinkError> {
        let mut routes = Vec::new();
        for request in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut stream = self.handle.route().get(request).execute();
            while let Some(route) =
                stream
                    .try_next()
                    .await
                    .map_err(|source| LinkError::Netlink {
                        what: "listing routes",
                        source,
                    })?
            {
                if route.header.kind != RouteType::Unicast {
                    continue;
                }
                let mut table = u32::from(route.header.table);
                let (mut dst, mut oif) = (None, None);
                for attribute in &route.attributes {
                    match attribute {
                        RouteAttribute::Table(t) => table = *t,
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                            dst = Some(IpAddr::V4(*a))
                        }
                        RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                            dst = Some(IpAddr::V6(*a))
                        }
                        _ => {}
                    }
                }
                let len = route.header.destination_prefix_length;
                let dst = dst.unwrap_or(
                    if route.header.address_family == rtnetlink::packet_route::AddressFamily::Inet6
                    {
                        Ipv6Addr::UNSPECIFIED.into()
                    } else {
                        Ipv4Addr::UNSPECIFIED.into()
                    },
                );
                if table != MAIN_TABLE {
                    continue;
                }
                if let (Some(oif), Ok(net)) = (oif, IpNet::new(dst, len)) {
                    routes.push((net, oif));
                }
            }
        }
        Ok(routes)
    }

    /// The node's own addresses: those on interfaces that are not pod interfaces, but for
    /// loopback and link-local ones.
    pub async fn node_addrs(&self) -> Result<Vec<IpAddr>, LinkError> {
        let links = self.links().await?;
        let mut addrs = BTreeSet::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(message) = stream
            .try_next()
            .await
            .map_err(|source| LinkError::Netlink {
                what: "listing addresses",
                source,
            })?
        {
            let Some((name, _)) = links.get(&message.header.index) else {
                continue;
            };
            if self.is_pod_interface(name) {
                continue;
            }
            for attribute in &message.attributes {
                if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = attribute {
                    let link_local = match ip {
                        IpAddr::V4(a) => a.is_loopback() || a.is_link_local(),
                        IpAddr::V6(a) => a.is_loopback() || a.is_unicast_link_local(),
                    };
                    if !link_local {
                        addrs.insert(*ip);
                    }
                }
            }
        }
        Ok(addrs.into_iter().collect())
    }

    /// Finds each local pod's interface: the pod interface the most specific route to each of
    /// its addresses leads to (all of them must agree).
    pub async fn discover(
        &self,
        local_pods: &[(ObjectKey, Vec<IpAddr>)],
    ) -> Result<Discovery, LinkError> {
        let links = self.links().await?;
        let routes = self.routes().await?;
        let route_to = |addr: &IpAddr| {
            routes
                .iter()
                .filter(|(net, _)| net.contains(addr))
                .max_by_key(|(net, _)| net.prefix_len())
                .map(|(_, oif)| *oif)
        };
        let mut discovery = Discovery::default();
        let mut used = BTreeSet::new();
        for (key, addrs) in local_pods {
            let oifs: BTreeSet<Option<u32>> = addrs.iter().map(route_to).collect();
            let found = match oifs.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(index)] => links
                    .get(index)
                    .filter(|(name, _)| self.is_pod_interface(name))
                    .map(|(name, _)| Interface {
                        ifname: name.clone(),
                        ifindex: *index,
                    }),
                _ => None,
            };
            match found {
                Some(interface) => {
                    used.insert(interface.ifindex);
                    discovery.interfaces.insert(key.clone(), interface);
                }
                None => discovery.missing.push(key.clone()),
            }
        }
        for (index, (name, lo)) in &links {
            if *lo {
                continue;
            }
            if self.is_pod_interface(name) {
                if !used.contains(index) {
                    discovery.unknown.push(name.clone());
                }
            } else {
                discovery.uplinks.push(name.clone());
            }
        }
        Ok(discovery)
    }
}
