//! The topology's netlink work: links between nodes, routes, addresses, each batch run on a
//! thread inside the namespace it changes.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
};

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
        link::{InfoData, InfoVeth},
        route::RouteScope,
    },
};

use crate::netns::{LabError, NetNs, Result};

use super::{GATEWAY_V4, GATEWAY_V6, NodeHandle, link_ifname};

/// Joins two nodes with a veth, `to-<b>` in `a` and `to-<a>` in `b`, each end holding the
/// link-local `fe80::<own index>` and a route to the other node's addresses.
pub(super) fn link_nodes(a: &NodeHandle, b: &NodeHandle) -> Result<()> {
    let (a_if, b_if) = (link_ifname(b), link_ifname(a));
    let b_fd = b.netns.fd()?;
    let (peer_name, name) = (b_if.clone(), a_if.clone());
    netlink(&a.netns, move |nl| async move {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.clone())
            .setns_by_fd(b_fd.as_raw_fd())
            .build();
        let veth = LinkVeth::new(&name, &peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .up()
            .build();
        let what = format!("add veth {name} (peer {peer_name} in the other node)");
        nl.run(what, nl.handle.link().add(veth).execute()).await?;
        drop(b_fd);
        Ok(())
    })?;
    for (here, there, ifname) in [(a, b, a_if), (b, a, b_if)] {
        let (index, v4, v6) = (here.index, there.addr_v4(), there.addr_v6());
        let there_ll = link_local(there.index);
        netlink(&here.netns, move |nl| async move {
            let link = nl.set_up_by_name(&ifname).await?;
            nl.add_addr(link, link_local(index).into(), 64).await?;
            nl.add_host_route(link, v4.into(), None).await?;
            nl.add_route_via(link, v6.into(), there_ll.into()).await
        })?;
    }
    Ok(())
}

/// `fe80::<index>`: a node's address on its links to other nodes.
fn link_local(index: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(index))
}

/// Routes `addrs` (living on node `to`) from node `from`, through the link between them.
pub(super) fn route_to(from: &NodeHandle, to: &NodeHandle, addrs: Vec<IpAddr>) -> Result<()> {
    let ifname = link_ifname(to);
    let (v4, v6) = (to.addr_v4(), link_local(to.index));
    netlink(&from.netns, move |nl| async move {
        let link = nl.index_of(&ifname).await?;
        for addr in addrs {
            let via = if addr.is_ipv4() { v4.into() } else { v6.into() };
            nl.add_route_via(link, addr, via).await?;
        }
        Ok(())
    })
}

/// Runs one batch of netlink requests inside `netns`, on a connection opened there.
pub(super) fn netlink<T, F, Fut>(netns: &NetNs, batch: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let ns = netns.name().to_owned();
    netns.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| LabError::Io {
                what: format!("network namespace {ns}: start a netlink runtime"),
                source,
            })?;
        runtime.block_on(async move {
            // Inside the runtime: the socket registers with its reactor when created.
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(|source| LabError::Io {
                    what: format!("network namespace {ns}: open a netlink socket"),
                    source,
                })?;
            let driver = tokio::spawn(connection);
            let result = batch(Netlink { handle, ns }).await;
            driver.abort();
            result
        })
    })?
}

/// A netlink handle that knows its namespace, so every error says where it happened.
pub(super) struct Netlink {
    pub(super) handle: Handle,
    ns: String,
}

impl Netlink {
    pub(super) async fn run<T>(
        &self,
        what: String,
        request: impl Future<Output = std::result::Result<T, rtnetlink::Error>>,
    ) -> Result<T> {
        request.await.map_err(|source| LabError::Netlink {
            what: format!("in {}: {what}", self.ns),
            source,
        })
    }

    pub(super) async fn index_of(&self, ifname: &str) -> Result<u32> {
        let what = format!("look up interface {ifname}");
        let mut request = self.handle.link().get().match_name(ifname).execute();
        let link = self.run(what, request.try_next()).await?;
        link.map(|link| link.header.index)
            .ok_or_else(|| LabError::NoSuchLink {
                ns: self.ns.clone(),
                ifname: ifname.to_owned(),
            })
    }

    pub(super) async fn set_up_by_name(&self, ifname: &str) -> Result<u32> {
        let index = self.index_of(ifname).await?;
        let request = self
            .handle
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute();
        self.run(format!("set {ifname} up"), request).await?;
        Ok(index)
    }

    /// Adds an address; IPv6 ones skip duplicate address detection so they work at once.
    pub(super) async fn add_addr(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let mut request = self.handle.address().add(index, addr, prefix_len);
        if addr.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let what = format!("add address {addr}/{prefix_len} on ifindex {index}");
        self.run(what, request.execute()).await
    }

    /// `<dst>/32 (or /128) dev <index> [src <src>]`, on-link.
    pub(super) async fn add_host_route(
        &self,
        index: u32,
        dst: IpAddr,
        src: Option<IpAddr>,
    ) -> Result<()> {
        let message = match dst {
            IpAddr::V4(dst) => {
                let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst, 32)
                    .output_interface(index)
                    .scope(RouteScope::Link);
                if let Some(IpAddr::V4(src)) = src {
                    builder = builder.pref_source(src);
                }
                builder.build()
            }
            IpAddr::V6(dst) => {
                let mut builder = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(dst, 128)
                    .output_interface(index);
                if let Some(IpAddr::V6(src)) = src {
                    builder = builder.pref_source(src);
                }
                builder.build()
            }
        };
        let what = format!("add route {dst} dev ifindex {index}");
        self.run(what, self.handle.route().add(message).execute())
            .await
    }

    /// `<dst>/32 (or /128) via <via> dev <index>`.
    pub(super) async fn add_route_via(&self, index: u32, dst: IpAddr, via: IpAddr) -> Result<()> {
        let message = match (dst, via) {
            (IpAddr::V4(dst), IpAddr::V4(via)) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst, 32)
                .gateway(via)
                .output_interface(index)
                .build(),
            (IpAddr::V6(dst), IpAddr::V6(via)) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst, 128)
                .gateway(via)
                .output_interface(index)
                .build(),
            _ => unreachable!("route families are matched by the callers"),
        };
        let what = format!("add route {dst} via {via} dev ifindex {index}");
        let request = self.handle.route().add(message).replace().execute();
        self.run(what, request).await
    }

    /// Deletes the route to `dst`/32 (or /128), if any.
    pub(super) async fn del_route(&self, dst: IpAddr) -> Result<()> {
        let message = match dst {
            IpAddr::V4(dst) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst, 32)
                .build(),
            IpAddr::V6(dst) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst, 128)
                .build(),
        };
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(()),
            // ESRCH: no such route.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(source) => Err(LabError::Netlink {
                what: format!("in {}: delete route {dst}", self.ns),
                source,
            }),
        }
    }

    /// `default via 169.254.1.1 dev <index> src <src>`.
    pub(super) async fn add_default_route_v4(&self, index: u32, src: Ipv4Addr) -> Result<()> {
        let message = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(GATEWAY_V4)
            .output_interface(index)
            .pref_source(src)
            .build();
        let what = format!("add default route via {GATEWAY_V4} dev ifindex {index}");
        self.run(what, self.handle.route().add(message).execute())
            .await
    }

    /// `default via fe80::1 dev <index> src <src>`.
    pub(super) async fn add_default_route_v6(&self, index: u32, src: Ipv6Addr) -> Result<()> {
        let message = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(GATEWAY_V6)
            .output_interface(index)
            .pref_source(src)
            .build();
        let what = format!("add default route via {GATEWAY_V6} dev ifindex {index}");
        self.run(what, self.handle.route().add(message).execute())
            .await
    }
}
