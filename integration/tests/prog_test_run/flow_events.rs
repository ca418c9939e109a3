//! Flow events and audit mode, as the programs produce them: which verdicts owe an event and
//! what it carries, the per-source budget, and audit passing what policy would drop.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use palisade::dataplane::FlowSettings;
use palisade_common::{
    AllowReason, DIR_EGRESS, DIR_INGRESS, EP_AUDIT, EventMemo, FLOW_ALLOWED, FLOW_AUDIT,
    FLOW_DENIED, FlowEvent, NO_CLASS, PROTO_TCP,
};

use super::*;

fn events_on(node: &mut Node, per_second: u32) -> RingBuf<MapData> {
    node.dataplane
        .set_flow_settings(FlowSettings {
            events: true,
            events_per_second: per_second,
            audit_all: false,
            strict_uplink: false,
        })
        .expect("flow settings");
    node.dataplane.take_events().expect("ring buffer")
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<FlowEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(bytemuck::pod_read_unaligned(
            &item[..std::mem::size_of::<FlowEvent>()],
        ));
    }
    out
}

fn run(node: &Node, program: &'static str, frame: &[u8]) -> i32 {
    node.dataplane
        .test_run(program, frame, LOOPBACK_IFINDEX)
        .unwrap_or_else(|e| panic!("{}", chain(&e)))
        .action
}

#[test]
fn a_new_flow_and_a_drop_each_send_one_event_and_a_tracked_packet_none() {
    let mut node = Node::with_server();
    let mut ring = events_on(&mut node, 1000);
    assert_eq!(
        run(&node, PROG_TO_POD, &syn4(CLIENT, SERVER, 41000, 80)),
        PASS
    );
    assert_eq!(
        run(&node, PROG_TO_POD, &syn4(OTHER, SERVER, 41000, 80)),
        DROP
    );
    // The server's answer to the admitted SYN: a tracked flow, no event.
    assert_eq!(
        run(&node, PROG_FROM_POD, &ack4(SERVER, CLIENT, 80, 41000)),
        PASS
    );
    let events = drain(&mut ring);
    assert_eq!(events.len(), 2, "{events:#?}");
    let (allowed, denied) = (&events[0], &events[1]);
    assert_eq!(
        (allowed.verdict, allowed.reason, allowed.class),
        (FLOW_ALLOWED, AllowReason::Policy as u8, 0)
    );
    assert_eq!(
        (allowed.saddr, allowed.daddr, allowed.sport, allowed.dport),
        (Addr::from_v4(CLIENT), Addr::from_v4(SERVER), 41000, 80)
    );
    assert_eq!(
        (allowed.direction, allowed.ifindex, allowed.protocol),
        (DIR_INGRESS, LOOPBACK_IFINDEX, PROTO_TCP)
    );
    assert_eq!(
        (denied.verdict, denied.reason, denied.class),
        (FLOW_DENIED, DropReason::PolicyIngress as u8, NO_CLASS)
    );
    assert_eq!(denied.saddr, Addr::from_v4(OTHER));
    assert_eq!(
        node.dataplane.counters().unwrap()[Stat::EventsSent as usize],
        2
    );
}

#[test]
fn events_off_send_nothing() {
    let mut node = Node::with_server();
    let mut ring = node.dataplane.take_events().expect("ring buffer");
    // `Dataplane::load` leaves the kernel's settings at zero: events off.
    assert_eq!(
        run(&node, PROG_TO_POD, &syn4(OTHER, SERVER, 41000, 80)),
        DROP
    );
    assert!(drain(&mut ring).is_empty());
    let counters = node.dataplane.counters().unwrap();
    assert_eq!(counters[Stat::EventsSent as usize], 0);
    assert_eq!(counters[Stat::EventsSuppressed as usize], 0);
}

#[test]
fn a_source_over_its_budget_is_counted_and_the_count_rides_on_its_next_event() {
    let mut node = Node::with_server();
    let mut ring = events_on(&mut node, 2);
    for port in 0..5 {
        assert_eq!(
            run(&node, PROG_TO_POD, &syn4(OTHER, SERVER, 42000 + port, 80)),
            DROP
        );
    }
    // Another source has a budget of its own.
    assert_eq!(
        run(&node, PROG_TO_POD, &syn4(CLIENT, SERVER, 42000, 81)),
        DROP
    );
    let events = drain(&mut ring);
    let from_other = events
        .iter()
        .filter(|e| e.saddr == Addr::from_v4(OTHER))
        .count();
    assert_eq!(from_other, 2, "{events:#?}");
    assert!(events.iter().any(|e| e.saddr == Addr::from_v4(CLIENT)));
    let counters = node.dataplane.counters().unwrap();
    assert_eq!(counters[Stat::EventsSuppressed as usize], 3);
    // Every packet was still dropped and counted as such.
    assert_eq!(counters[DropReason::PolicyIngress.stat_index() as usize], 6);
    // The next window: the first event carries the three suppressed.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        run(&node, PROG_TO_POD, &syn4(OTHER, SERVER, 42010, 80)),
        DROP
    );
    let events = drain(&mut ring);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].suppressed, 3);
}

/// Runs `f` on CPU `cpu` only (a test run executes on the calling thread's CPU), then lets
/// the thread run anywhere again.
fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    use nix::{sched::CpuSet, sched::sched_getaffinity, sched::sched_setaffinity, unistd::Pid};
    let before = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let mut only = CpuSet::new();
    only.set(cpu).expect("a CPU index");
    sched_setaffinity(Pid::from_raw(0), &only)
        .unwrap_or_else(|e| panic!("cannot run on CPU {cpu}: {e}"));
    let out = f();
    sched_setaffinity(Pid::from_raw(0), &before).expect("restore the affinity");
    out
}

/// The two CPUs a test of per-CPU state runs on; fails (rather than skips) on one CPU.
fn two_cpus() -> (usize, usize) {
    use nix::{sched::CpuSet, sched::sched_getaffinity, unistd::Pid};
    let set = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .take(2)
        .collect();
    assert!(
        cpus.len() == 2,
        "this test needs two CPUs to run on (per-CPU event memos); it has {cpus:?}"
    );
    (cpus[0], cpus[1])
}

#[test]
fn what_each_cpu_suppressed_rides_on_the_next_event_wherever_it_is_sent() {
    let (first, second) = two_cpus();
    let mut node = Node::with_server();
    let mut ring = events_on(&mut node, 2);
    let syn = |port| syn4(OTHER, SERVER, port, 80);
    // Two sent and three suppressed on one CPU (the first of them found spent in the budget's
    // entry, the next two by that CPU's memo), four more on the other.
    on_cpu(first, || {
        for port in 0..5 {
            assert_eq!(run(&node, PROG_TO_POD, &syn(43000 + port)), DROP);
        }
    });
    on_cpu(second, || {
        for port in 5..9 {
            assert_eq!(run(&node, PROG_TO_POD, &syn(43000 + port)), DROP);
        }
    });
    assert_eq!(drain(&mut ring).len(), 2);
    let counters = node.dataplane.counters().unwrap();
    assert_eq!(counters[Stat::EventsSuppressed as usize], 7);
    assert_eq!(counters[DropReason::PolicyIngress.stat_index() as usize], 9);
    // The first event of the next window, sent from CPU `cpu`.
    let mut next_window = |cpu, port| {
        std::thread::sleep(Duration::from_millis(1100));
        on_cpu(cpu, || {
            assert_eq!(run(&node, PROG_TO_POD, &syn(port)), DROP)
        });
        let events = drain(&mut ring);
        assert_eq!(events.len(), 1, "{events:#?}");
        events[0]
    };
    // Sent from either CPU, it carries all seven; and nothing is counted twice: the window
    // after has none to report.
    assert_eq!(next_window(second, 43100).suppressed, 7);
    assert_eq!(next_window(first, 43101).suppressed, 0);
}

#[test]
fn senders_over_budget_on_one_cpu_keep_their_own_counts_in_one_memo_slot_or_two() {
    // OTHER and CLIENT (which the server admits only on port 80: port 9 is denied), and a
    // sender from TEST-NET-2 whose memo slot is OTHER's: it finds the slot taken while OTHER's
    // window lasts, and is counted in its budget's entry instead.
    let shared = (1..=254)
        .map(|last| [198, 51, 100, last])
        .find(|a| {
            EventMemo::slot_of(&Addr::from_v4(*a)) == EventMemo::slot_of(&Addr::from_v4(OTHER))
        })
        .expect("a TEST-NET-2 address in OTHER's memo slot");
    assert_ne!(
        EventMemo::slot_of(&Addr::from_v4(CLIENT)),
        EventMemo::slot_of(&Addr::from_v4(OTHER)),
        "the test assumes CLIENT and OTHER have slots of their own"
    );
    let (cpu, _) = two_cpus();
    let mut node = Node::with_server();
    let mut ring = events_on(&mut node, 1);
    let senders = [(OTHER, 80), (CLIENT, 9), (shared, 80)];
    on_cpu(cpu, || {
        // Interleaved: one sent each, then three suppressed each.
        for round in 0..4 {
            for (i, &(from, port)) in senders.iter().enumerate() {
                let sport = 44000 + 10 * i as u16 + round;
                assert_eq!(
                    run(&node, PROG_TO_POD, &syn4(from, SERVER, sport, port)),
                    DROP
                );
            }
        }
    });
    assert_eq!(drain(&mut ring).len(), 3);
    assert_eq!(
        node.dataplane.counters().unwrap()[Stat::EventsSuppressed as usize],
        9
    );
    std::thread::sleep(Duration::from_millis(1100));
    on_cpu(cpu, || {
        for (i, &(from, port)) in senders.iter().enumerate() {
            let sport = 44100 + i as u16;
            assert_eq!(
                run(&node, PROG_TO_POD, &syn4(from, SERVER, sport, port)),
                DROP
            );
        }
    });
    let events = drain(&mut ring);
    assert_eq!(events.len(), 3, "{events:#?}");
    for &(from, _) in &senders {
        let event = events
            .iter()
            .find(|e| e.saddr == Addr::from_v4(from))
            .unwrap_or_else(|| panic!("an event from {from:?}: {events:#?}"));
        assert_eq!(event.suppressed, 3, "{from:?}");
    }
}

#[test]
fn audit_passes_and_reports_what_policy_would_drop_per_endpoint_or_for_the_node() {
    let mut node = Node::with_server();
    let mut ring = events_on(&mut node, 1000);
    let server = ObjectKey::new("x", "server");
    node.state.endpoints.get_mut(&server).unwrap().flags |= EP_AUDIT;
    node.sync(&[("server", LOOPBACK_IFINDEX)]);
    assert_eq!(
        run(&node, PROG_TO_POD, &syn4(OTHER, SERVER, 43000, 80)),
        PASS
    );
    assert_eq!(
        run(&node, PROG_FROM_POD, &syn4(SERVER, OTHER, 43000, 8080)),
        PASS
    );
    // Tracked like an admitted flow: the reply passes without another event.
    assert_eq!(
        run(&node, PROG_FROM_POD, &ack4(SERVER, OTHER, 80, 43000)),
        PASS
    );
    // Not a policy verdict: a spoofed source is dropped in audit mode too.
    assert_eq!(
        run(&node, PROG_FROM_POD, &syn4(CLIENT, OTHER, 43000, 80)),
        DROP
    );
    let events = drain(&mut ring);
    let verdicts: Vec<(u8, u8, u8)> = events
        .iter()
        .map(|e| (e.verdict, e.direction, e.reason))
        .collect();
    assert_eq!(
        verdicts,
        [
            (FLOW_AUDIT, DIR_INGRESS, DropReason::PolicyIngress as u8),
            (FLOW_AUDIT, DIR_EGRESS, DropReason::PolicyEgress as u8),
            (FLOW_DENIED, DIR_EGRESS, DropReason::SpoofedSource as u8),
        ]
    );
    let counters = node.dataplane.counters().unwrap();
    assert_eq!(counters[Stat::AuditPassed as usize], 2);
    assert_eq!(counters[DropReason::PolicyIngress.stat_index() as usize], 0);

    // Back to enforcing the endpoint, then audit for the whole node: no reload either way.
    node.state.endpoints.get_mut(&server).unwrap().flags &= !EP_AUDIT;
    node.sync(&[("server", LOOPBACK_IFINDEX)]);
    assert_eq!(
        run(&node, PROG_TO_POD, &syn4(OTHER, SERVER, 43001, 80)),
        DROP
    );
    node.dataplane
        .set_flow_settings(FlowSettings {
            events: true,
            events_per_second: 1000,
            audit_all: true,
            strict_uplink: false,
        })
        .unwrap();
    assert_eq!(
        run(&node, PROG_TO_POD, &syn4(OTHER, SERVER, 43002, 80)),
        PASS
    );
    let events = drain(&mut ring);
    assert_eq!(
        events.iter().map(|e| e.verdict).collect::<Vec<_>>(),
        [FLOW_DENIED, FLOW_AUDIT]
    );
}
