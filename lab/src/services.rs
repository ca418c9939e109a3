//! Services as kube-proxy makes them: every pod gets a ClusterIP Service `s-<namespace>-<pod>`
//! exposing each of its declared ports, and every node translates the ClusterIP to the pod's
//! address with DNAT before routing (nat PREROUTING, as kube-proxy's iptables and nftables modes
//! do). The translation is an nftables table per node, written whole with `nft -f` the way
//! kube-proxy's nftables mode feeds `nft` a transaction: one atomic replacement per change.
//!
//! Probes `via: service` then reach the backend only through the kernel's NAT, and the
//! dataplane must judge egress policy against the backend it was translated to.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Command, Stdio},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    netns::{LabError, NetNs, Result},
    serve::Proto,
};
use palisade::k8s::cluster::ObjectKey;

/// The lab's Service range for IPv4 (kube-apiserver's `--service-cluster-ip-range` default).
pub const SERVICE_RANGE_V4: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16) {
    Ok(net) => net,
    Err(_) => panic!("valid prefix"),
};
/// The lab's Service range for IPv6.
pub const SERVICE_RANGE_V6: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0), 112) {
        Ok(net) => net,
        Err(_) => panic!("valid prefix"),
    };
/// The nftables table the lab's kube-proxy owns in each node namespace.
const TABLE: &str = "palisade-lab-kube-proxy";

pub fn service_ranges() -> [IpNet; 2] {
    [SERVICE_RANGE_V4.into(), SERVICE_RANGE_V6.into()]
}

/// One Service: the ClusterIP of each family the pod has, and where it leads.
#[derive(Clone, Debug)]
struct Service {
    /// (ClusterIP, backend address) per family.
    addrs: Vec<(IpAddr, IpAddr)>,
    ports: Vec<(Proto, u16)>,
}

/// ClusterIPs by pod, stable for the pod's lifetime: a pod re-created under the same key gets
/// its old ClusterIP back, as a Service that outlives its pods would.
#[derive(Debug, Default)]
pub struct Services {
    cluster_ips: BTreeMap<ObjectKey, u16>,
    services: BTreeMap<ObjectKey, Service>,
}

impl Services {
    /// Declares (or updates) the Service of pod `key`.
    pub fn set(&mut self, key: &ObjectKey, backends: &[IpAddr], ports: &[(Proto, u16)]) {
        let next = 10 + u16::try_from(self.cluster_ips.len()).unwrap_or(u16::MAX - 10);
        let n = *self.cluster_ips.entry(key.clone()).or_insert(next);
        let mut addrs = Vec::new();
        if let Some(v4) = backends.iter().find(|a| a.is_ipv4()) {
            let [a, b, ..] = SERVICE_RANGE_V4.network().octets();
            let [hi, lo] = n.to_be_bytes();
            addrs.push((IpAddr::V4(Ipv4Addr::new(a, b, hi, lo)), *v4));
        }
        if let Some(v6) = backends.iter().find(|a| a.is_ipv6()) {
            let mut segments = SERVICE_RANGE_V6.network().segments();
            segments[7] = n;
            addrs.push((IpAddr::V6(Ipv6Addr::from(segments)), *v6));
        }
        self.services.insert(
            key.clone(),
            Service {
                addrs,
                ports: ports.to_vec(),
            },
        );
    }

    pub fn remove(&mut self, key: &ObjectKey) {
        self.services.remove(key);
    }

    /// The ClusterIP of pod `key`'s Service in the family of `like`.
    pub fn cluster_ip(&self, key: &ObjectKey, like: IpAddr) -> Option<IpAddr> {
        let service = self.services.get(key)?;
        service
            .addrs
            .iter()
            .find(|(cluster_ip, _)| cluster_ip.is_ipv4() == like.is_ipv4())
            .map(|(cluster_ip, _)| *cluster_ip)
    }

    /// The whole nftables transaction: the table is created if missing, then deleted and
    /// written again, all at once.
    pub fn ruleset(&self) -> String {
        let mut out = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
        let _ = writeln!(out, "table inet {TABLE} {{");
        let _ = writeln!(out, "  chain services {{");
        let _ = writeln!(
            out,
            "    type nat hook prerouting priority dstnat; policy accept;"
        );
        for (key, service) in &self.services {
            let _ = writeln!(out, "    # s-{}-{}", key.namespace, key.name);
            for (cluster_ip, backend) in &service.addrs {
                let family = if cluster_ip.is_ipv4() { "ip" } else { "ip6" };
                let backend = match backend {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                };
                for (proto, port) in &service.ports {
                    let l4 = match proto {
                        Proto::Tcp => "tcp",
                        Proto::Udp => "udp",
                        Proto::Sctp => "sctp",
                    };
                    let _ = writeln!(
                        out,
                        "    {family} daddr {cluster_ip} meta l4proto {l4} th dport {port} dnat {family} to {backend}"
                    );
                }
            }
        }
        out.push_str("  }\n}\n");
        out
    }

    /// Installs the translation in a node's namespace.
    pub fn install(&self, node: &NetNs) -> Result<()> {
        let ruleset = self.ruleset();
        let ns = node.name().to_owned();
        node.run(move || nft(&ns, &ruleset))?
    }
}

/// Runs `nft -f -` with `ruleset` in the calling thread's network namespace.
fn nft(ns: &str, ruleset: &str) -> Result<()> {
    let what = || format!("in {ns}: nft -f - (Service translation)");
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Io {
            what: format!(
                "{}: starting nft (package nftables; `cargo xtask setup` installs it)",
                what()
            ),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|source| LabError::Io {
                what: what(),
                source,
            })?;
    }
    let output = child.wait_with_output().map_err(|source| LabError::Io {
        what: what(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(LabError::Io {
        what: what(),
        source: std::io::Error::other(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ips_are_stable_and_per_family() {
        let mut services = Services::default();
        let a = ObjectKey::new("x", "a");
        let b = ObjectKey::new("x", "b");
        let a_ips: [IpAddr; 2] = ["10.244.1.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        services.set(&a, &a_ips, &[(Proto::Tcp, 80)]);
        services.set(&b, &["10.244.1.2".parse().unwrap()], &[(Proto::Udp, 53)]);
        let v4: IpAddr = "10.96.0.10".parse().unwrap();
        let v6: IpAddr = "fd00:10:96::a".parse().unwrap();
        assert_eq!(services.cluster_ip(&a, a_ips[0]), Some(v4));
        assert_eq!(services.cluster_ip(&a, a_ips[1]), Some(v6));
        assert_eq!(services.cluster_ip(&b, v6), None, "b has no IPv6 address");
        services.remove(&a);
        assert_eq!(services.cluster_ip(&a, a_ips[0]), None);
        services.set(&a, &a_ips, &[(Proto::Tcp, 80)]);
        assert_eq!(
            services.cluster_ip(&a, a_ips[0]),
            Some(v4),
            "same key, same ClusterIP"
        );

        let rules = services.ruleset();
        assert!(
            rules
                .contains("ip daddr 10.96.0.10 meta l4proto tcp th dport 80 dnat ip to 10.244.1.1")
        );
        assert!(rules.contains(
            "ip6 daddr fd00:10:96::a meta l4proto tcp th dport 80 dnat ip6 to [fd00::1]"
        ));
        assert!(
            rules
                .contains("ip daddr 10.96.0.11 meta l4proto udp th dport 53 dnat ip to 10.244.1.2")
        );
        for net in service_ranges() {
            assert!(
                services
                    .services
                    .values()
                    .flat_map(|s| &s.addrs)
                    .any(|(c, _)| net.contains(c))
            );
        }
    }
}
