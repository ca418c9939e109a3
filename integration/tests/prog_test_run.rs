//! The loaded programs judge crafted frames through `BPF_PROG_TEST_RUN`: no namespace, no veth,
//! no pod. Each case checks the TC action and that exactly one counter moved, by exactly one.
//!
//! The node: pod `x/server` is isolated both ways by one policy (ingress from `app: client` on
//! TCP 80, egress to `app: client` on TCP 8080); `x/client` (selected by no policy) and `x/other`
//! are its peers.
//! The endpoint under test is written under the loopback ifindex, where a test run's skb sits.
//!
//! Needs root to load the programs; without it every test fails with that message rather than
//! passing unnoticed.

use std::collections::BTreeMap;

use palisade::{
    dataplane::{Dataplane, LOOPBACK_IFINDEX},
    k8s::cluster::ObjectKey,
    k8s::fixtures::{apply_yaml, dual_stack_apps},
    policy::{Compiler, NodeState, NodeView},
};
use palisade_common::{Addr, DropReason, PROG_FROM_POD, PROG_TO_POD, STAT_SLOTS, Stat};

use palisade_integration::{frames::*, require_root};
#[path = "prog_test_run/attacks.rs"]
mod attacks;
#[path = "prog_test_run/endpoints.rs"]
mod endpoints;
#[path = "prog_test_run/flow_events.rs"]
mod flow_events;
#[path = "prog_test_run/tiers.rs"]
mod tiers;

const PASS: i32 = -1; // TC_ACT_UNSPEC: on to the next program or the stack.
const DROP: i32 = 2; // TC_ACT_SHOT

const NODE: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 10];
const CLIENT: [u8; 4] = [10, 0, 0, 20];
const OTHER: [u8; 4] = [10, 0, 0, 30];
const SERVER6: [u8; 16] = v6(0x10);
const CLIENT6: [u8; 16] = v6(0x20);
const OTHER6: [u8; 16] = v6(0x30);

const fn v6(last: u8) -> [u8; 16] {
    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]
}

/// What x/server admits: x/client to TCP 80 in, and out to x/client on TCP 8080.
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
  egress:
    - to: [{podSelector: {matchLabels: {app: client}}}]
      ports: [{protocol: TCP, port: 8080}]
"#;

/// The one counter a run must move.
#[derive(Clone, Copy, Debug)]
enum Counted {
    Stat(Stat),
    Drop(DropReason),
    /// Passes that no counter records: neighbour discovery, a fragment for an open pod.
    Nothing,
}

struct Node {
    dataplane: Dataplane,
    state: NodeState,
}

impl Node {
    /// The dataplane with `x/server`'s endpoint at loopback.
    fn with_server() -> Self {
        Self::with_endpoint("server", LOOPBACK_IFINDEX)
    }

    /// The dataplane with the endpoint of pod `x/{pod}` (the only one written) under `ifindex`.
    fn with_endpoint(pod: &str, ifindex: u32) -> Self {
        Self::with_endpoints(&[(pod, ifindex)])
    }

    /// The dataplane with the endpoints of pods `x/{pod}` (the only ones written) under their
    /// interface indices.
    fn with_endpoints(endpoints: &[(&str, u32)]) -> Self {
        Self::with_yaml("", endpoints)
    }

    /// [`Self::with_endpoints`] with the objects of `extra` applied after [`POLICY`].
    fn with_yaml(extra: &str, endpoints: &[(&str, u32)]) -> Self {
        require_root();
        let dataplane = Dataplane::load().unwrap_or_else(|e| panic!("{}", chain(&e)));
        let mut cluster = dual_stack_apps(
            "x",
            &[
                ("server", "10.0.0.10", "fd00::10"),
                ("client", "10.0.0.20", "fd00::20"),
                ("other", "10.0.0.30", "fd00::30"),
            ],
        );
        apply_yaml(&mut cluster, POLICY);
        if !extra.is_empty() {
            apply_yaml(&mut cluster, extra);
        }
        let node_addrs = [std::net::IpAddr::from(NODE)];
        let state = Compiler::new().compile(
            &cluster,
            &NodeView {
                name: "node-1",
                addrs: &node_addrs,
            },
        );
        assert!(state.errors.is_empty(), "{:?}", state.errors);
        let mut node = Self { dataplane, state };
        node.sync(endpoints);
        node
    }

    /// Writes exactly `endpoints` (pod name, ifindex), as the agent does when pods come, go or
    /// get a new interface.
    fn sync(&mut self, endpoints: &[(&str, u32)]) {
        let mut ifindex = BTreeMap::new();
        for &(pod, index) in endpoints {
            let pod = ObjectKey::new("x", pod);
            assert!(self.state.endpoints.contains_key(&pod), "{pod} compiled");
            ifindex.insert(pod, index);
        }
        self.dataplane.sync(&self.state, &ifindex).expect("sync");
    }

    /// Runs `program` on `frame` at loopback; asserts the action and that `counted` is the only
    /// counter that moved, by one.
    #[track_caller]
    fn expect(&self, program: &'static str, frame: &[u8], action: i32, counted: Counted) {
        self.expect_on(LOOPBACK_IFINDEX, program, frame, action, counted);
    }

    /// [`Self::expect`] on the interface `ifindex`.
    #[track_caller]
    fn expect_on(
        &self,
        ifindex: u32,
        program: &'static str,
        frame: &[u8],
        action: i32,
        counted: Counted,
    ) {
        self.expect_marked(ifindex, program, frame, 0, action, counted);
    }

    /// [`Self::expect_on`] for an skb carrying `mark`; returns the mark the program left.
    #[track_caller]
    fn expect_marked(
        &self,
        ifindex: u32,
        program: &'static str,
        frame: &[u8],
        mark: u32,
        action: i32,
        counted: Counted,
    ) -> u32 {
        let before = self.dataplane.counters().expect("counters");
        let (outcome, mark_out) = self
            .dataplane
            .test_run_marked(program, frame, ifindex, mark)
            .unwrap_or_else(|e| panic!("{}", chain(&e)));
        let after = self.dataplane.counters().expect("counters");
        let mut expected = [0u64; STAT_SLOTS as usize];
        match counted {
            Counted::Stat(stat) => expected[stat as usize] = 1,
            Counted::Drop(reason) => expected[reason.stat_index() as usize] = 1,
            Counted::Nothing => {}
        }
        let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(
            (outcome.action, delta.as_slice()),
            (action, expected.as_slice()),
            "{program} on ifindex {ifindex}: (action, counter deltas) for {counted:?}"
        );
        mark_out
    }

    #[track_caller]
    fn passes(&self, program: &'static str, frame: &[u8], counted: Stat) {
        self.expect(program, frame, PASS, Counted::Stat(counted));
    }

    #[track_caller]
    fn drops(&self, program: &'static str, frame: &[u8], reason: DropReason) {
        self.expect(program, frame, DROP, Counted::Drop(reason));
    }
}

/// An error with its causes, which `Display` of the outer error leaves out.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out += &format!(": {text}");
        }
        cause = e.source();
    }
    out
}

#[test]
fn an_allowed_ipv4_syn_passes_and_a_denied_one_is_dropped_in_each_direction() {
    let node = Node::with_server();
    node.passes(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 40000, 80),
        Stat::NewFlowAllowed,
    );
    node.drops(
        PROG_TO_POD,
        &syn4(OTHER, SERVER, 40000, 80),
        DropReason::PolicyIngress,
    );
    node.drops(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 40001, 81),
        DropReason::PolicyIngress,
    );
    node.passes(
        PROG_FROM_POD,
        &syn4(SERVER, CLIENT, 40000, 8080),
        Stat::NewFlowAllowed,
    );
    node.drops(
        PROG_FROM_POD,
        &syn4(SERVER, OTHER, 40000, 8080),
        DropReason::PolicyEgress,
    );
    node.drops(
        PROG_FROM_POD,
        &syn4(SERVER, CLIENT, 40001, 80),
        DropReason::PolicyEgress,
    );
}

#[test]
fn an_allowed_ipv6_syn_passes_and_a_denied_one_is_dropped_in_each_direction() {
    let node = Node::with_server();
    node.passes(
        PROG_TO_POD,
        &syn6(CLIENT6, SERVER6, 40000, 80),
        Stat::NewFlowAllowed,
    );
    node.drops(
        PROG_TO_POD,
        &syn6(OTHER6, SERVER6, 40000, 80),
        DropReason::PolicyIngress,
    );
    node.passes(
        PROG_FROM_POD,
        &syn6(SERVER6, CLIENT6, 40000, 8080),
        Stat::NewFlowAllowed,
    );
    node.drops(
        PROG_FROM_POD,
        &syn6(SERVER6, OTHER6, 40000, 8080),
        DropReason::PolicyEgress,
    );
}

#[test]
fn the_reply_of_an_allowed_flow_passes_on_the_other_hook() {
    let node = Node::with_server();
    let request = syn4(CLIENT, SERVER, 40000, 80);
    // The reply leaves the server towards port 40000, which its egress policy does not admit.
    let reply = ack4(SERVER, CLIENT, 80, 40000);
    node.drops(PROG_FROM_POD, &reply, DropReason::PolicyEgress);
    node.passes(PROG_TO_POD, &request, Stat::NewFlowAllowed);
    node.passes(PROG_FROM_POD, &reply, Stat::CtHit);
    node.passes(PROG_TO_POD, &ack4(CLIENT, SERVER, 40000, 80), Stat::CtHit);
    // A SYN opens a connection: judged by policy again, never let through by conntrack.
    node.passes(PROG_TO_POD, &request, Stat::NewFlowAllowed);

    let request6 = syn6(CLIENT6, SERVER6, 40000, 80);
    let reply6 = ack6(SERVER6, CLIENT6, 80, 40000);
    node.passes(PROG_TO_POD, &request6, Stat::NewFlowAllowed);
    node.passes(PROG_FROM_POD, &reply6, Stat::CtHit);
}

#[test]
fn truncated_ip_and_tcp_headers_are_dropped_as_malformed() {
    let node = Node::with_server();
    // The header length says 24 bytes (options); the frame ends after the fixed 20.
    let mut short_options = ipv4_with(CLIENT, SERVER, &[0x01; 4], 0, &[]);
    short_options.truncate(ETH_HLEN + 20);
    node.drops(PROG_TO_POD, &short_options, DropReason::Malformed);
    node.drops(PROG_FROM_POD, &short_options, DropReason::Malformed);

    let mut short_tcp = syn4(CLIENT, SERVER, 40000, 80);
    short_tcp.truncate(ETH_HLEN + 20 + 2);
    node.drops(PROG_TO_POD, &short_tcp, DropReason::Malformed);

    let mut short_tcp6 = syn6(CLIENT6, SERVER6, 40000, 80);
    short_tcp6.truncate(ETH_HLEN + 40 + 3);
    node.drops(PROG_TO_POD, &short_tcp6, DropReason::Malformed);

    let mut bad_ihl = syn4(CLIENT, SERVER, 40000, 80);
    bad_ihl[ETH_HLEN] = 0x44; // a 16-byte header
    node.drops(PROG_TO_POD, &bad_ihl, DropReason::Malformed);

    let mut not_v6 = syn6(CLIENT6, SERVER6, 40000, 80);
    not_v6[ETH_HLEN] = 0x40; // version 4 under the IPv6 ethertype
    node.drops(PROG_TO_POD, &not_v6, DropReason::Malformed);
}

/// A frame cut inside the fixed IPv4 or IPv6 header: a pod with a raw socket can send one, but
/// recent kernels (6.18 here) refuse to build such an skb for a test run (`EINVAL`). Where the
/// kernel builds it, it must be dropped as malformed.
#[test]
fn a_frame_cut_inside_the_fixed_ip_header_is_malformed_where_the_kernel_runs_it() {
    let node = Node::with_server();
    let mut short_ip = syn4(CLIENT, SERVER, 40000, 80);
    short_ip.truncate(ETH_HLEN + 10);
    let mut short_ip6 = syn6(CLIENT6, SERVER6, 40000, 80);
    short_ip6.truncate(ETH_HLEN + 30);
    for frame in [short_ip, short_ip6] {
        match node
            .dataplane
            .test_run(PROG_TO_POD, &frame, LOOPBACK_IFINDEX)
        {
            Err(e) if chain(&e).contains("os error 22") => {
                eprintln!(
                    "the kernel refuses a test run of a {}-byte IP frame",
                    frame.len()
                );
            }
            _ => node.drops(PROG_TO_POD, &frame, DropReason::Malformed),
        }
    }
}

#[test]
fn ipv4_options_are_skipped_and_the_real_tcp_ports_judged() {
    let node = Node::with_server();
    // NOP, NOP, end of list, padding: read as ports, these would say 257 -> 80 (allowed).
    let options = [0x01, 0x01, 0x00, 0x50];
    let allowed = ipv4_with(CLIENT, SERVER, &options, 0, &tcp_syn(40000, 80));
    let denied = ipv4_with(CLIENT, SERVER, &options, 0, &tcp_syn(40001, 81));
    node.passes(PROG_TO_POD, &allowed, Stat::NewFlowAllowed);
    node.drops(PROG_TO_POD, &denied, DropReason::PolicyIngress);
}

#[test]
fn a_non_first_fragment_to_an_isolated_pod_is_dropped_and_a_first_fragment_is_judged_by_its_ports()
{
    let node = Node::with_server();
    let first = |sport, dport| ipv4_with(CLIENT, SERVER, &[], MF, &tcp_syn(sport, dport));
    node.passes(PROG_TO_POD, &first(40000, 80), Stat::NewFlowAllowed);
    node.drops(PROG_TO_POD, &first(40001, 81), DropReason::PolicyIngress);

    // Offset 185 (1480 bytes): data, not a TCP header. The admitted datagram's later
    // fragments (same addresses, protocol and identification) get its verdict ...
    let middle = ipv4_with(CLIENT, SERVER, &[], MF | 185, &[0; 8]);
    let last = ipv4_with(CLIENT, SERVER, &[], 370, &[0; 8]);
    node.passes(PROG_TO_POD, &middle, Stat::FragmentPassed);
    node.passes(PROG_TO_POD, &last, Stat::FragmentPassed);
    // ... those of the denied one, or of a datagram whose first fragment never came, do not.
    let denied_first = with_ip_id(&first(40002, 81), 0x4321);
    node.drops(PROG_TO_POD, &denied_first, DropReason::PolicyIngress);
    let denied_middle = with_ip_id(&middle, 0x4321);
    node.drops(PROG_TO_POD, &denied_middle, DropReason::Fragment);
    let orphan = with_ip_id(&last, 0x7777);
    node.drops(PROG_TO_POD, &orphan, DropReason::Fragment);
    // From another source, or the other way: another datagram.
    let other = ipv4_with(OTHER, SERVER, &[], 370, &[0; 8]);
    node.drops(PROG_TO_POD, &other, DropReason::Fragment);
    let egress = ipv4_with(SERVER, CLIENT, &[], 185, &[0; 8]);
    node.drops(PROG_FROM_POD, &egress, DropReason::Fragment);
}

/// `frame` (Ethernet + IPv4) with the IPv4 identification `id`.
fn with_ip_id(frame: &[u8], id: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&id.to_be_bytes());
    f
}

#[test]
fn ipv6_extension_headers_to_an_isolated_pod_are_dropped() {
    let node = Node::with_server();
    // Hop-by-hop options (PadN) then TCP, on a flow the policy admits.
    let mut hop_by_hop = vec![TCP, 0, 0x01, 0x04, 0, 0, 0, 0];
    hop_by_hop.extend(tcp_syn(40000, 80));
    let hbh = ipv6(CLIENT6, SERVER6, IPV6_HOP_BY_HOP, &hop_by_hop);
    node.drops(PROG_TO_POD, &hbh, DropReason::Ipv6ExtensionHeader);

    // A fragment header is walked: the first fragment (offset 0, M set) is judged by its TCP
    // ports, and a later fragment of the same datagram gets its verdict.
    let mut fragment = vec![TCP, 0, 0x00, 0x01, 0, 0, 0x12, 0x34];
    fragment.extend(tcp_syn(40000, 80));
    let frag = ipv6(CLIENT6, SERVER6, IPV6_FRAGMENT, &fragment);
    node.passes(PROG_TO_POD, &frag, Stat::NewFlowAllowed);
    let later = ipv6(
        CLIENT6,
        SERVER6,
        IPV6_FRAGMENT,
        &[TCP, 0, 0x05, 0xc8, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    node.passes(PROG_TO_POD, &later, Stat::FragmentPassed);
    let mut denied = vec![TCP, 0, 0x00, 0x01, 0, 0, 0x43, 0x21];
    denied.extend(tcp_syn(40000, 81));
    node.drops(
        PROG_TO_POD,
        &ipv6(CLIENT6, SERVER6, IPV6_FRAGMENT, &denied),
        DropReason::PolicyIngress,
    );
    let denied_later = ipv6(
        CLIENT6,
        SERVER6,
        IPV6_FRAGMENT,
        &[TCP, 0, 0x05, 0xc8, 0, 0, 0x43, 0x21, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    node.drops(PROG_TO_POD, &denied_later, DropReason::Fragment);
    // A chain: a fragment header after hop-by-hop options is not walked.
    let mut chain = vec![IPV6_FRAGMENT, 0, 0x01, 0x04, 0, 0, 0, 0];
    chain.extend(&fragment);
    let chained = ipv6(CLIENT6, SERVER6, IPV6_HOP_BY_HOP, &chain);
    node.drops(PROG_TO_POD, &chained, DropReason::Ipv6ExtensionHeader);

    let mut egress = vec![TCP, 0, 0x01, 0x04, 0, 0, 0, 0];
    egress.extend(tcp_syn(40000, 8080));
    let egress = ipv6(SERVER6, CLIENT6, IPV6_HOP_BY_HOP, &egress);
    node.drops(PROG_FROM_POD, &egress, DropReason::Ipv6ExtensionHeader);
}

#[test]
fn neighbour_solicitation_passes_an_isolated_pod_uncounted() {
    let node = Node::with_server();
    // From a peer no policy admits, in both directions.
    node.expect(
        PROG_TO_POD,
        &neighbour_solicitation(OTHER6, SERVER6),
        PASS,
        Counted::Nothing,
    );
    node.expect(
        PROG_FROM_POD,
        &neighbour_solicitation(SERVER6, OTHER6),
        PASS,
        Counted::Nothing,
    );
}

#[test]
fn arp_passes_as_not_ip() {
    let node = Node::with_server();
    node.passes(PROG_TO_POD, &arp_request(CLIENT, SERVER), Stat::NotIp);
    node.passes(PROG_FROM_POD, &arp_request(CLIENT, SERVER), Stat::NotIp);
}

#[test]
fn a_packet_on_an_interface_without_endpoint_is_dropped() {
    // The server's endpoint sits under an index no interface has; loopback is then unknown.
    let node = Node::with_endpoint("server", u32::MAX);
    let syn = syn4(CLIENT, SERVER, 40000, 80);
    node.drops(PROG_TO_POD, &syn, DropReason::NoEndpoint);
    node.drops(
        PROG_FROM_POD,
        &syn4(SERVER, CLIENT, 40000, 8080),
        DropReason::NoEndpoint,
    );
    node.drops(
        PROG_TO_POD,
        &syn6(CLIENT6, SERVER6, 40000, 80),
        DropReason::NoEndpoint,
    );
}

#[test]
fn icmp_echo_to_a_pod_whose_rules_all_name_ports_is_dropped() {
    let node = Node::with_server();
    node.drops(
        PROG_TO_POD,
        &echo4(CLIENT, SERVER, 8, 7),
        DropReason::PolicyIngress,
    );
    node.drops(
        PROG_FROM_POD,
        &echo4(SERVER, CLIENT, 8, 7),
        DropReason::PolicyEgress,
    );
}

#[test]
fn a_pod_no_policy_selects_admits_and_tracks_everything() {
    // x/client is selected by no policy: open both ways.
    let node = Node::with_endpoint("client", LOOPBACK_IFINDEX);
    node.passes(
        PROG_FROM_POD,
        &syn4(CLIENT, OTHER, 40000, 9),
        Stat::NewFlowAllowed,
    );
    node.passes(PROG_TO_POD, &ack4(OTHER, CLIENT, 9, 40000), Stat::CtHit);
    // Echo is keyed by identifier and role, so the reply finds the request.
    node.passes(
        PROG_FROM_POD,
        &echo4(CLIENT, OTHER, 8, 7),
        Stat::NewFlowAllowed,
    );
    node.passes(PROG_TO_POD, &echo4(OTHER, CLIENT, 0, 7), Stat::CtHit);

    let mut hop_by_hop = vec![TCP, 0, 0x01, 0x04, 0, 0, 0, 0];
    hop_by_hop.extend(tcp_syn(40000, 80));
    let hbh = ipv6(OTHER6, CLIENT6, IPV6_HOP_BY_HOP, &hop_by_hop);
    node.passes(PROG_TO_POD, &hbh, Stat::NewFlowAllowed);
    // A non-first fragment has no ports to track: it passes, and no counter records it.
    let fragment = ipv4_with(OTHER, CLIENT, &[], 185, &[0; 8]);
    node.expect(PROG_TO_POD, &fragment, PASS, Counted::Nothing);
}

/// An ICMPv4 error of `icmp_type` from `from` to `to`, quoting the first 28 bytes of `quoted`
/// (an IPv4 frame as the frame builders make them).
fn icmp4_error(from: [u8; 4], to: [u8; 4], icmp_type: u8, quoted: &[u8]) -> Vec<u8> {
    let mut payload = vec![icmp_type, 4, 0, 0, 0, 0, 0x05, 0xdc];
    payload.extend(&quoted[ETH_HLEN..ETH_HLEN + 28]);
    ipv4_proto(from, to, ICMP, &[], 0, &payload)
}

/// An ICMPv6 packet too big from `from` to `to`, quoting the first 48 bytes of `quoted`.
fn icmp6_too_big(from: [u8; 16], to: [u8; 16], quoted: &[u8]) -> Vec<u8> {
    let mut payload = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    payload.extend(&quoted[ETH_HLEN..ETH_HLEN + 48]);
    ipv6(from, to, ICMPV6, &payload)
}

#[test]
fn icmp_errors_about_a_tracked_flow_pass_and_others_are_judged_as_icmp() {
    let node = Node::with_server();
    const ROUTER: [u8; 4] = [10, 0, 0, 99];
    const ROUTER6: [u8; 16] = v6(0x99);
    node.passes(
        PROG_TO_POD,
        &syn4(CLIENT, SERVER, 40100, 80),
        Stat::NewFlowAllowed,
    );

    // Path MTU discovery: a router cannot forward the server's reply and says so.
    let reply = syn4(SERVER, CLIENT, 80, 40100);
    let too_big = icmp4_error(ROUTER, SERVER, 3, &reply);
    node.passes(PROG_TO_POD, &too_big, Stat::CtHit);
    // The same error about a flow that does not exist is plain ICMP from an unknown peer.
    let stray = icmp4_error(ROUTER, SERVER, 3, &syn4(SERVER, CLIENT, 80, 40101));
    node.drops(PROG_TO_POD, &stray, DropReason::PolicyIngress);
    // An echo request is no error: judged by policy as before.
    let echo = ipv4_proto(ROUTER, SERVER, ICMP, &[], 0, &[8, 0, 0, 0, 0, 1, 0, 1]);
    node.drops(PROG_TO_POD, &echo, DropReason::PolicyIngress);

    // The server itself answers a packet of the tracked flow with an error (egress).
    let request = syn4(CLIENT, SERVER, 40100, 80);
    let unreachable = icmp4_error(SERVER, CLIENT, 3, &request);
    node.passes(PROG_FROM_POD, &unreachable, Stat::CtHit);
    // ... but not with another pod's address as its source.
    let spoofed = icmp4_error(OTHER, CLIENT, 3, &request);
    node.drops(PROG_FROM_POD, &spoofed, DropReason::SpoofedSource);

    // IPv6: packet too big about the server's reply.
    node.passes(
        PROG_TO_POD,
        &syn6(CLIENT6, SERVER6, 40100, 80),
        Stat::NewFlowAllowed,
    );
    let reply6 = syn6(SERVER6, CLIENT6, 80, 40100);
    node.passes(
        PROG_TO_POD,
        &icmp6_too_big(ROUTER6, SERVER6, &reply6),
        Stat::CtHit,
    );
    let stray6 = syn6(SERVER6, CLIENT6, 80, 40101);
    node.drops(
        PROG_TO_POD,
        &icmp6_too_big(ROUTER6, SERVER6, &stray6),
        DropReason::PolicyIngress,
    );
}
