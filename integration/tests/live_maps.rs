//! The live maps answer `palisade explain` as the programs would: `Dataplane::live_decision`
//! reads the kernel's maps through the same `admit` the programs run, and must agree with the
//! compiled state (`policy::lookup::admits`) on every flow, allowed and denied alike, with CIDR
//! excepts, port ranges, SCTP and rules without ports among them. Needs root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use palisade::{
    dataplane::{Dataplane, LiveDecision},
    k8s::{
        cluster::{Cluster, ObjectKey},
        fixtures::{apply_yaml, dual_stack_apps},
    },
    policy::{ClusterChange, Compiler, NodeView, Update, lookup::admits},
};
use palisade_common::{DIR_EGRESS, DIR_INGRESS, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use palisade_integration::require_root;

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: client}}}]
      ports: [{protocol: TCP, port: 80}]
    - from: [{ipBlock: {cidr: 10.1.0.0/16, except: [10.1.2.0/24]}}]
      ports: [{protocol: TCP, port: 1000, endPort: 2000}, {protocol: SCTP, port: 9}]
    - ports: [{protocol: UDP, port: 53}]
  egress:
    - to: [{podSelector: {matchLabels: {app: client}}}]
      ports: [{protocol: TCP, port: 8080}]
    - to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: "fd00::/64", except: ["fd00::30/128"]}}]
      ports: [{protocol: TCP, port: 443}]
    - to: [{podSelector: {matchLabels: {app: other}}}]
"#;

/// Pods `server`, `client` and `other` of namespace `x`, an IPv4 and an IPv6 address each.
fn server_client_other() -> Cluster {
    dual_stack_apps(
        "x",
        &[
            ("server", "10.0.0.10", "fd00::10"),
            ("client", "10.0.0.20", "fd00::20"),
            ("other", "10.0.0.30", "fd00::30"),
        ],
    )
}

#[test]
fn the_live_maps_agree_with_the_compiled_state_on_every_flow() {
    require_root();
    let mut dataplane = Dataplane::load().expect("load the programs");
    let mut cluster = server_client_other();
    apply_yaml(&mut cluster, POLICY);
    let node_addrs = [IpAddr::from([10, 0, 0, 1])];
    let view = NodeView {
        name: "node-1",
        addrs: &node_addrs,
    };
    let state = Compiler::new().compile(&cluster, &view);
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    let server = ObjectKey::new("x", "server");
    let client = ObjectKey::new("x", "client");
    let ifindex = BTreeMap::from([(server.clone(), 1), (client.clone(), 2)]);
    dataplane.sync(&state, &ifindex).expect("sync");

    // Map keys only: nothing is sent anywhere.
    let peers: Vec<IpAddr> = [
        "10.0.0.1",
        "10.0.0.20",
        "10.0.0.30",
        "10.1.5.5",
        "10.1.2.3",
        "203.0.113.8",
        "fd00::20",
        "fd00::30",
        "fd00::99",
        "fd01::1",
    ]
    .iter()
    .map(|p| p.parse().expect("test address"))
    .collect();
    let (mut flows, mut allowed, mut classes) = (0, 0, BTreeSet::new());
    for (key, index) in [(&server, 1u32), (&client, 2)] {
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            for peer in &peers {
                for protocol in [PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP] {
                    for port in [0u16, 9, 53, 80, 443, 999, 1000, 1500, 2000, 2001, 8080] {
                        let live = dataplane
                            .live_decision(index, direction, *peer, protocol, port)
                            .expect("read the live maps");
                        let expected = admits(&state, key, direction, *peer, protocol, port)
                            .expect("a compiled endpoint");
                        let says = matches!(
                            live,
                            LiveDecision::NotIsolated
                                | LiveDecision::FromHost
                                | LiveDecision::Class(_)
                        );
                        assert_eq!(
                            says, expected,
                            "{key} dir {direction} peer {peer} proto {protocol} port {port}: {live:?}"
                        );
                        if direction == DIR_INGRESS
                            && peer.to_string() == "10.0.0.1"
                            && key == &server
                        {
                            assert_eq!(live, LiveDecision::FromHost, "the node's own address");
                        }
                        if let LiveDecision::Class(c) = live {
                            classes.insert(c);
                        }
                        assert!(
                            !matches!(live, LiveDecision::Denied { audit: true, .. }),
                            "no audit here"
                        );
                        flows += 1;
                        allowed += usize::from(expected);
                    }
                }
            }
        }
    }
    // Both answers occur, and more than one class decides: the agreement is not vacuous.
    assert!(
        allowed > 0 && allowed < flows,
        "{allowed} of {flows} allowed"
    );
    assert!(classes.len() > 1, "classes seen: {classes:?}");
    assert_eq!(
        dataplane
            .live_decision(99, DIR_INGRESS, peers[0], PROTO_TCP, 80)
            .expect("read the live maps"),
        LiveDecision::NoEndpoint,
        "an interface without an endpoint entry"
    );
}

/// Three policies for `server`, each its own class; the first is deleted.
const THREE: &str = r"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-first, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-second, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: other}}}], ports: [{port: 443}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-third, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 8080}, {port: 9000, endPort: 9100}]}]
";

/// A deleted policy's class is taken out of the live maps in place: the surviving classes keep
/// their bits (`policy/compile/slots.rs`), so the endpoint's entries only lose a bit or go,
/// no rule set is rewritten under the idle id, and the live maps then answer every flow as the
/// compiled state does.
#[test]
fn a_deleted_policy_is_taken_out_of_the_live_maps_in_place() {
    require_root();
    let mut dataplane = Dataplane::load().expect("load the programs");
    let mut cluster = server_client_other();
    apply_yaml(&mut cluster, THREE);
    let node_addrs = [IpAddr::from([10, 0, 0, 1])];
    let view = NodeView {
        name: "node-1",
        addrs: &node_addrs,
    };
    let mut compiler = Compiler::new();
    let mut state = compiler.compile(&cluster, &view);
    let server = ObjectKey::new("x", "server");
    let ifindex = BTreeMap::from([(server.clone(), 1)]);
    dataplane.sync(&state, &ifindex).expect("sync");
    let entries = |s: &palisade::policy::NodeState| {
        let ep = &s.endpoints[&server];
        ep.peers.len() + ep.ports.len()
    };
    let before = entries(&state);
    let live = |dataplane: &Dataplane, peer: &str, port: u16| {
        let decision = dataplane
            .live_decision(1, DIR_INGRESS, peer.parse().expect("addr"), PROTO_TCP, port)
            .expect("read the live maps");
        matches!(decision, LiveDecision::Class(_))
    };
    assert!(live(&dataplane, "10.0.0.20", 80) && live(&dataplane, "fd00::20", 80));

    let first = ObjectKey::new("x", "a-first");
    cluster.policies.remove(&first);
    let update = compiler.apply_change(&mut state, &cluster, &view, &ClusterChange::Policy(first));
    assert_eq!(update, Update::Incremental);
    let journal = compiler.take_journal();
    let report = dataplane
        .sync_journaled(&state, &ifindex, Some(&journal))
        .expect("sync");
    assert_eq!(report.swaps, 0, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    // Only what carried the deleted class's bit: far fewer than the endpoint's entries.
    assert!(
        report.writes + report.deletes > 0 && report.writes + report.deletes < before,
        "{report:?} against {before} entries"
    );
    let peers = [
        "10.0.0.20",
        "10.0.0.30",
        "fd00::20",
        "fd00::30",
        "203.0.113.9",
    ];
    let mut flows = 0;
    for peer in peers {
        for port in [80u16, 443, 8080, 9000, 9050, 9101] {
            let expected = admits(
                &state,
                &server,
                DIR_INGRESS,
                peer.parse().expect("addr"),
                PROTO_TCP,
                port,
            )
            .expect("a compiled endpoint");
            assert_eq!(live(&dataplane, peer, port), expected, "{peer} port {port}");
            flows += usize::from(expected);
        }
    }
    assert!(flows > 0, "something is still allowed");
    assert!(
        !live(&dataplane, "10.0.0.20", 80),
        "the deleted policy's flow"
    );
    assert!(live(&dataplane, "10.0.0.30", 443) && live(&dataplane, "10.0.0.20", 9050));
}
