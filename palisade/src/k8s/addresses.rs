//! Pod addresses the lab hands out, the same way in the kernel lab and in `--model` runs.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use crate::k8s::cluster::{ObjectKey, PodInfo, pod_addrs};

/// Assigns addresses from 10.244.100.0/22 to pods whose manifest gives none, and keeps them
/// when a later step re-applies the pod. Cases that need particular addresses (ipBlock) give
/// them explicitly, elsewhere in 10.244.0.0/16.
#[derive(Debug, Default)]
pub struct AddressBook {
    assigned: BTreeMap<ObjectKey, Vec<IpAddr>>,
    next: u16,
}

impl AddressBook {
    /// The pod's addresses: from its status, or assigned here and written into its status (as a
    /// kubelet would report them, so the agent reads them from the same place).
    pub fn addresses(&mut self, key: &ObjectKey, pod: &mut PodInfo) -> Vec<IpAddr> {
        let from_status = pod_addrs(pod);
        if !from_status.is_empty() {
            return from_status;
        }
        let addrs = self
            .assigned
            .entry(key.clone())
            .or_insert_with(|| {
                self.next += 1;
                let n = self.next;
                vec![IpAddr::V4(Ipv4Addr::new(
                    10,
                    244,
                    100 + (n / 250) as u8,
                    (n % 250) as u8 + 2,
                ))]
            })
            .clone();
        pod.set_addrs(&addrs);
        addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reapplied_pod_keeps_its_assigned_address() {
        let mut book = AddressBook::default();
        let key = ObjectKey::new("x", "a");
        let first = book.addresses(&key, &mut PodInfo::default());
        let other = book.addresses(&ObjectKey::new("x", "b"), &mut PodInfo::default());
        assert_ne!(first, other);
        assert_eq!(book.addresses(&key, &mut PodInfo::default()), first);
    }

    #[test]
    fn addresses_from_the_manifest_win() {
        let mut pod = PodInfo {
            pod_ips: vec!["10.244.1.10".into()],
            ..Default::default()
        };
        let addrs = AddressBook::default().addresses(&ObjectKey::new("x", "a"), &mut pod);
        assert_eq!(addrs, vec!["10.244.1.10".parse::<IpAddr>().expect("ip")]);
    }
}
