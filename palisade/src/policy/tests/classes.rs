//! How many rules one pod can hold: rules with the same peers share a class whatever their
//! ports, and what still does not fit fails closed with an error naming the rule.

use std::{fmt::Write as _, net::IpAddr};

use palisade_common::{DIR_INGRESS, MAX_CLASSES, PROTO_TCP};

use super::{NODE_ADDR, World, allowed, xy};
use crate::{
    k8s::cluster::ObjectKey,
    policy::{
        NodeView,
        evaluate::{Endpoint, Evaluator},
        lookup::admits,
    },
};

/// One policy `x/many` for pod `x/a` with `rules` ingress rules: rule `i` as `rule(i)` writes it
/// (its `from` and `ports`, indented for a list item).
fn many_rules(rules: usize, rule: impl Fn(usize) -> String) -> World {
    let mut yaml = String::from(
        "metadata: {name: many, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n",
    );
    for i in 0..rules {
        let _ = writeln!(yaml, "{}", rule(i));
    }
    xy().policy(&yaml)
}

/// The reference evaluator on `from` -> `to`.
fn evaluator_allows(world: &World, from: &str, to: &str, port: u16) -> bool {
    let addrs: Vec<IpAddr> = vec![NODE_ADDR.parse().expect("addr")];
    let nodes = [NodeView {
        name: "node-1",
        addrs: &addrs,
    }];
    let end = |s: &str| match s.split_once('/') {
        Some((ns, pod)) => {
            let (key, _) = world
                .cluster
                .pods
                .get_key_value(&ObjectKey::new(ns, pod))
                .expect("pod");
            Endpoint::pod(&world.cluster, key).expect("pod address")
        }
        None => Endpoint::at(&world.cluster, s.parse().expect("address")),
    };
    Evaluator::new(&world.cluster, &nodes)
        .evaluate(end(from), end(to), PROTO_TCP, port)
        .allowed
}

#[test]
fn seventy_single_port_rules_from_the_same_peers_are_enforced_exactly_as_one_class() {
    // Every other port, so that no two rules' ports join into one range.
    let port = |i: usize| 1000 + 2 * u16::try_from(i).expect("small");
    let w = many_rules(70, |i| {
        format!(
            "  - from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]\n    ports: [{{port: {}}}]",
            port(i)
        )
    });
    let s = w.compile();
    assert_eq!(s.errors, []);
    let ep = &s.endpoints[&ObjectKey::new("x", "a")];
    assert_eq!(ep.classes[usize::from(DIR_INGRESS)].len(), 1);
    assert_eq!(ep.classes[usize::from(DIR_INGRESS)][0].rules.len(), 70);
    for i in 0..70 {
        assert!(
            allowed(&s, &w, "x/b", "x/a", PROTO_TCP, port(i)),
            "rule {i}"
        );
        assert!(
            !allowed(&s, &w, "y/b", "x/a", PROTO_TCP, port(i)),
            "rule {i}"
        );
    }
    for p in (990..1150).chain([port(70)]) {
        for from in ["x/b", "y/b", "10.1.2.3"] {
            assert_eq!(
                allowed(&s, &w, from, "x/a", PROTO_TCP, p),
                evaluator_allows(&w, from, "x/a", p),
                "{from} -> x/a TCP/{p}"
            );
        }
    }
    assert!(!allowed(&s, &w, "x/b", "x/a", PROTO_TCP, port(70)));
}

#[test]
fn rules_past_the_class_limit_allow_nothing_and_each_is_named_in_an_error() {
    // Seventy different peer lists (one /24 each) with seventy different ports: seventy classes.
    let w = many_rules(70, |i| {
        format!(
            "  - from: [{{ipBlock: {{cidr: 10.9.{i}.0/24}}}}]\n    ports: [{{port: {}}}]",
            2000 + i
        )
    });
    let s = w.compile();
    let pod = ObjectKey::new("x", "a");
    for i in 0..70 {
        let (peer, port) = (
            format!("10.9.{i}.5"),
            2000 + u16::try_from(i).expect("small"),
        );
        assert!(evaluator_allows(&w, &peer, "x/a", port), "rule {i}");
        assert_eq!(
            admits(
                &s,
                &pod,
                DIR_INGRESS,
                peer.parse().expect("addr"),
                PROTO_TCP,
                port
            ),
            Some(i < MAX_CLASSES),
            "rule {i}: the first {MAX_CLASSES} classes hold, the rest fail closed"
        );
    }
    let fields: Vec<&str> = s.errors.iter().map(|e| e.field.as_str()).collect();
    let expected: Vec<String> = (MAX_CLASSES..70)
        .map(|i| format!("spec.ingress[{i}]"))
        .collect();
    assert_eq!(fields, expected);
    let error = s.errors[0].to_string();
    assert!(
        error.starts_with(&format!(
            "networkpolicy x/many: spec.ingress[{MAX_CLASSES}]: pod x/a: more than {MAX_CLASSES}"
        )),
        "{error}"
    );
    assert_eq!(
        s.endpoints[&pod].degraded[usize::from(DIR_INGRESS)],
        s.errors
    );
}

#[test]
fn rules_with_the_same_peers_in_another_order_or_policy_share_a_class() {
    let w = xy()
        .policy("metadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}, {ipBlock: {cidr: 10.9.0.0/16}}]\n    ports: [{port: 80}]\n")
        .policy("metadata: {name: q, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.9.0.0/16}}, {podSelector: {matchLabels: {pod: b}}}]\n    ports: [{port: 90, endPort: 95}]\n");
    let s = w.compile();
    let ep = &s.endpoints[&ObjectKey::new("x", "a")];
    assert_eq!(ep.classes[usize::from(DIR_INGRESS)].len(), 1);
    for (from, port, expected) in [
        ("x/b", 80, true),
        ("x/b", 93, true),
        ("10.9.1.1", 95, true),
        ("x/b", 81, false),
        ("x/b", 96, false),
        ("y/b", 80, false),
    ] {
        assert_eq!(
            allowed(&s, &w, from, "x/a", PROTO_TCP, port),
            expected,
            "{from} TCP/{port}"
        );
    }
}
