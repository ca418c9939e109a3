use crate::flows::{FlowEnd, FlowRecord, FlowVerdict};

use super::{Aggregator, Summary};

/// x/c's SYN to x/b:80 from `sport`, denied by x/deny-b at second `second` of 10:00.
fn syn(sport: u16, second: u32) -> FlowRecord {
    FlowRecord {
        time: format!("2025-01-01T10:00:{second:02}.000Z"),
        node: "node-1".into(),
        verdict: FlowVerdict::Denied,
        direction: "ingress".into(),
        pod: Some("x/b".into()),
        reason: "policy-ingress".into(),
        protocol: "TCP".into(),
        src: FlowEnd {
            ip: "10.244.1.3".parse().unwrap(),
            port: sport,
            pod: Some("x/c".into()),
        },
        dst: FlowEnd {
            ip: "10.244.1.2".parse().unwrap(),
            port: 80,
            pod: Some("x/b".into()),
        },
        allowed_by: Vec::new(),
        isolated_by: vec!["x/deny-b".into()],
        translated: false,
        suppressed: 0,
    }
}

fn counts(summaries: &[Summary]) -> Vec<(u64, &str, &str)> {
    summaries
        .iter()
        .map(|s| match s {
            Summary::Flow {
                count,
                first_seen,
                last_seen,
                ..
            } => (*count, &first_seen[17..19], &last_seen[17..19]),
            Summary::Overflow { records, .. } => (*records, "overflow", ""),
        })
        .collect()
}

#[test]
fn the_first_record_of_a_flow_is_logged_at_once_and_its_retransmissions_are_counted() {
    let mut log = Aggregator::new(100);
    // A blocked client: a SYN and its retransmissions at 1, 3, 7 s; then it retries from a
    // new port.
    let logged: Vec<bool> = [(40000, 0), (40000, 1), (40000, 3), (40000, 7), (40001, 8)]
        .into_iter()
        .map(|(port, at)| log.record(&syn(port, at)))
        .collect();
    assert_eq!(logged, [true, false, false, false, false]);
    let summaries = log.end_interval();
    assert_eq!(counts(&summaries), [(4, "01", "08")]);
    let Summary::Flow { record, .. } = &summaries[0] else {
        panic!("{summaries:?}")
    };
    assert_eq!(record.src.port, 0, "a summary is of every source port");
    assert_eq!(record.time, "2025-01-01T10:00:01.000Z");
    assert_eq!(record.isolated_by, ["x/deny-b"]);
}

#[test]
fn a_flow_still_going_gets_one_summary_per_interval_and_a_quiet_one_is_forgotten() {
    let mut log = Aggregator::new(100);
    assert!(log.record(&syn(40000, 0)));
    assert!(!log.record(&syn(40000, 1)));
    assert_eq!(counts(&log.end_interval()), [(1, "01", "01")]);
    // Still retrying in the next interval: counted, not logged.
    assert!(!log.record(&syn(40001, 12)));
    assert!(!log.record(&syn(40002, 15)));
    assert_eq!(counts(&log.end_interval()), [(2, "12", "15")]);
    // A whole interval without a record: nothing to say, and the flow is forgotten.
    assert_eq!(counts(&log.end_interval()), []);
    assert_eq!(log.tracked(), 0);
    assert!(log.record(&syn(40003, 40)), "logged at once again");
}

#[test]
fn a_flow_seen_once_just_before_an_interval_ends_is_kept_for_the_next() {
    let mut log = Aggregator::new(100);
    assert!(log.record(&syn(40000, 9)));
    assert_eq!(counts(&log.end_interval()), []);
    assert!(
        !log.record(&syn(40000, 10)),
        "its retransmission is counted"
    );
    assert_eq!(counts(&log.end_interval()), [(1, "10", "10")]);
}

#[test]
fn flows_differing_in_destination_port_verdict_or_policy_are_kept_apart() {
    let mut log = Aggregator::new(100);
    let other_port = FlowRecord {
        dst: crate::flows::FlowEnd {
            port: 443,
            ..syn(1, 0).dst
        },
        ..syn(1, 0)
    };
    let audited = FlowRecord {
        verdict: FlowVerdict::Audit,
        ..syn(2, 0)
    };
    let other_policy = FlowRecord {
        isolated_by: vec!["x/deny-all".into()],
        ..syn(3, 0)
    };
    for record in [syn(0, 0), other_port, audited, other_policy] {
        assert!(log.record(&record), "{record}");
    }
    assert_eq!(log.tracked(), 4);
}

#[test]
fn the_kernels_suppressed_counts_are_summed_in_the_summary() {
    let mut log = Aggregator::new(100);
    log.record(&syn(1, 0));
    for at in 1..4 {
        log.record(&FlowRecord {
            suppressed: 10,
            ..syn(1, at)
        });
    }
    let summaries = log.end_interval();
    assert!(
        matches!(
            summaries[..],
            [Summary::Flow {
                count: 3,
                suppressed: 30,
                ..
            }]
        ),
        "{summaries:?}"
    );
}

#[test]
fn a_full_table_counts_the_records_of_new_flows_it_did_not_log_and_says_so() {
    let mut log = Aggregator::new(2);
    // A scan: one flow per destination port.
    let scan = |port: u16, at: u32| FlowRecord {
        dst: crate::flows::FlowEnd {
            port,
            ..syn(1, at).dst
        },
        ..syn(1, at)
    };
    let logged: Vec<bool> = (1..=5).map(|port| log.record(&scan(port, 0))).collect();
    assert_eq!(logged, [true, true, false, false, false]);
    // Known flows are still counted while the table is full.
    assert!(!log.record(&scan(1, 2)));
    assert_eq!(
        log.end_interval(),
        [
            Summary::Flow {
                record: Box::new(FlowRecord {
                    src: FlowEnd {
                        port: 0,
                        ..scan(1, 2).src
                    },
                    ..scan(1, 2)
                }),
                count: 1,
                first_seen: "2025-01-01T10:00:02.000Z".into(),
                last_seen: "2025-01-01T10:00:02.000Z".into(),
                suppressed: 0,
            },
            Summary::Overflow {
                records: 3,
                max_flows: 2
            },
        ]
    );
    assert_eq!(log.tracked(), 2);
    assert!(!log.record(&scan(1, 12)), "port 1 is still going");
    assert!(!log.record(&scan(6, 12)), "still full");
    assert_eq!(
        counts(&log.end_interval()),
        [(1, "12", "12"), (1, "overflow", "")]
    );
    // Port 2's flow was quiet for a whole interval and is forgotten: room for a new one.
    assert_eq!(log.tracked(), 1);
    assert!(log.record(&scan(6, 21)));
}
