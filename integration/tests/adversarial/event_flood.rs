//! Item 8: flooding the flow-event ring to hide another pod's events. A pod sends denied
//! packets as fast as it can, from its own address, from the victim's (spending the victim's
//! budget if budgets went by claimed address) and from thousands of spoofed ones (each would
//! have a budget of its own if spoofing got past its hook), while the agent drains the ring as
//! it does; another pod's single denied packet must still produce its event.

use std::{
    net::{IpAddr, Ipv4Addr},
    thread,
    time::{Duration, Instant},
};

use palisade_common::{Addr, FLOW_DENIED, FlowEvent};
use palisade_integration::wire::udp_packet;

use super::*;

/// `z` admits nobody.
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: z-isolated, namespace: x}
spec:
  podSelector: {matchLabels: {app: z}}
  policyTypes: [Ingress]
"#;

/// Datagrams in the flood.
const FLOOD: u32 = 60_000;
const VICTIM_PORT: u16 = 4_444;

#[test]
fn a_flood_of_denied_packets_does_not_hide_another_pods_denied_event() {
    let lab = Lab::new(
        1,
        &[
            pod_on("f", 1, &["10.244.1.80"]),
            pod_on("v", 1, &["10.244.1.81"]),
            pod_on("z", 1, &["10.244.1.82"]),
        ],
        POLICIES,
    );
    let mut ring = lab.workers[0].take_events().expect("ring buffer");
    let (f, v, z): (IpAddr, IpAddr, IpAddr) =
        (lab.v4("f").into(), lab.v4("v").into(), lab.v4("z").into());
    let (from_f, from_v) = (lab.port("f"), lab.port("v"));

    let flood = thread::spawn(move || {
        let start = Instant::now();
        for i in 0..FLOOD {
            // A third from f's own address, a third spoofed from the victim's (whose event
            // budget the drops would spend if budgets went by claimed source), a third from
            // one of 65,536 addresses of the pod range.
            let src = match i % 3 {
                0 => f,
                1 => v,
                _ => {
                    let [_, _, hi, lo] = i.to_be_bytes();
                    IpAddr::V4(Ipv4Addr::new(10, 244, 100 + (hi % 100), lo))
                }
            };
            let port = 20_000 + u16::try_from(i % 30_000).unwrap();
            from_f.send(&udp_packet(src, z, port, port, b"flood"));
        }
        start.elapsed()
    });

    // Drain as the agent does, while the flood runs; the victim's packet goes in the middle.
    let mut events: Vec<FlowEvent> = Vec::new();
    let started = Instant::now();
    let mut victim_sent = false;
    while started.elapsed() < Duration::from_secs(6) && !(victim_sent && flood.is_finished()) {
        while let Some(item) = ring.next() {
            events.push(bytemuck::pod_read_unaligned(
                &item[..std::mem::size_of::<FlowEvent>()],
            ));
        }
        if !victim_sent && started.elapsed() > Duration::from_millis(300) {
            from_v.send(&udp_packet(
                v,
                z,
                40_000,
                VICTIM_PORT,
                &marker("flood-victim"),
            ));
            victim_sent = true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let took = flood.join().expect("flood");
    thread::sleep(Duration::from_millis(300));
    while let Some(item) = ring.next() {
        events.push(bytemuck::pod_read_unaligned(
            &item[..std::mem::size_of::<FlowEvent>()],
        ));
    }
    let from_flooder = events.iter().filter(|e| e.saddr != Addr::from(v)).count();
    eprintln!(
        "flood: {FLOOD} datagrams in {took:?}, {} events read, {from_flooder} not the victim's",
        events.len()
    );
    assert!(
        events.iter().any(|e| e.saddr == Addr::from(v)
            && e.daddr == Addr::from(z)
            && e.dport == VICTIM_PORT
            && e.verdict == FLOW_DENIED),
        "v's denied datagram to z during f's flood has its flow event ({} events read, \
         {from_flooder} from the flood)",
        events.len()
    );
}
