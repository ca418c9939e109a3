//! `palisade explain` against a running agent: the reference evaluator's verdict on the agent's
//! last snapshot, and the verdict of the kernel's maps as they are now, for every side of the
//! connection whose pod runs on this node. The two must agree; if they do not, the dataplane
//! is wrong (or a sync is in flight).

use palisade_common::{DIR_EGRESS, DIR_INGRESS};

use super::{Question, Side, Words};
use crate::{
    dataplane::{Dataplane, LiveDecision},
    flows::{
        Attribution,
        socket::{ExplainAnswer, ExplainRequest},
    },
    policy::{
        NodeView,
        compile::RuleRef,
        evaluate::{DirectionVerdict, Endpoint, Evaluator},
    },
};

/// Answers `request` from `attribution` (the last sync) and `dataplane`'s live maps.
pub fn explain(
    dataplane: &Dataplane,
    attribution: &Attribution,
    request: &ExplainRequest,
) -> Result<ExplainAnswer, String> {
    let cluster = &attribution.cluster;
    let Question {
        src,
        dst,
        protocol,
        port,
        ..
    } = Question::resolve(
        cluster,
        &request.from,
        &request.to,
        &request.flow,
        "the agent's cluster holds",
    )
    .map_err(|e| format!("{e:#}"))?;
    let nodes = [NodeView {
        name: &attribution.node,
        addrs: &attribution.node_addrs,
    }];
    let evaluator = Evaluator::new(cluster, &nodes);
    let verdict = evaluator.evaluate(src, dst, protocol, port);
    let mut lines = vec![verdict.to_string()];
    let mut sides = Vec::new();
    for (end, direction, peer, expected) in [
        (src, DIR_EGRESS, dst.addr(), &verdict.egress),
        (dst, DIR_INGRESS, src.addr(), &verdict.ingress),
    ] {
        let Endpoint::Pod(key, _) = end else { continue };
        if matches!(expected, DirectionVerdict::Itself) {
            continue;
        }
        let name = if direction == DIR_INGRESS {
            "ingress"
        } else {
            "egress"
        };
        let Some((ifindex, local)) = attribution.local.iter().find(|(_, l)| &l.key == key) else {
            lines.push(format!(
                "live maps: {name} of {key}: not a pod of node {} (ask its node's agent)",
                attribution.node
            ));
            continue;
        };
        let live = dataplane
            .live_decision(*ifindex, direction, peer, protocol, port)
            .map_err(|e| e.to_string())?;
        let d = usize::from(direction);
        let said = match live {
            LiveDecision::NoEndpoint => "no endpoint entry: every packet dropped".to_owned(),
            LiveDecision::NotIsolated => "not isolated".to_owned(),
            LiveDecision::FromHost => "from its own node (always allowed)".to_owned(),
            LiveDecision::Class(c) => {
                // A class may hold several rules (one peer list, or one port set): those the
                // evaluator found admitting, when it names any of them.
                let rules = local.classes[d]
                    .get(usize::from(c))
                    .map_or(&[][..], |class| &class.rules);
                let admitting = |r: &&RuleRef| match expected {
                    DirectionVerdict::AllowedBy(ids) => ids
                        .iter()
                        .any(|a| a.policy == r.policy && a.index == r.index),
                    _ => false,
                };
                let chosen: Vec<&RuleRef> = rules.iter().filter(admitting).collect();
                let shown = if chosen.is_empty() {
                    rules.iter().collect()
                } else {
                    chosen
                };
                let class = local.classes[d].get(usize::from(c));
                let names: Vec<String> = shown
                    .iter()
                    .map(|r| class.map_or_else(|| r.describe(), |class| class.describe(r)))
                    .collect();
                format!("allowed by class {c} ({})", names.join(", "))
            }
            LiveDecision::Denied { audit, tier_class } => {
                let by = tier_class.map_or_else(String::new, |c| {
                    let names = local.classes[d]
                        .get(usize::from(c))
                        .map_or_else(Vec::new, |class| class.describe_rules());
                    format!(" by class {c} ({})", names.join(", "))
                });
                if audit {
                    format!("would be denied{by}; passes and is reported (audit mode)")
                } else {
                    format!("denied{by}")
                }
            }
        };
        // Audit changes what happens to the packet, not what policy says.
        let maps_allow = matches!(
            live,
            LiveDecision::NotIsolated | LiveDecision::FromHost | LiveDecision::Class(_)
        );
        let side_agrees = maps_allow == expected.allows();
        lines.push(format!(
            "live maps on {}: {name} of {key} (ifindex {ifindex}): {said}{}",
            attribution.node,
            if side_agrees { "" } else { "  <- DISAGREES" }
        ));
        sides.push(Side {
            pod: key,
            direction: name,
            maps_allow,
            policy_allows: expected.allows(),
            degraded: &local.degraded[d],
        });
    }
    let agrees = super::conclude(
        &mut lines,
        0,
        &sides,
        &Words {
            maps: "live maps",
            agree: "agree with the reference evaluator",
            bug: "DISAGREE with the reference evaluator (a sync in flight, or a bug: please report it)",
        },
    );
    Ok(ExplainAnswer {
        lines,
        allowed: verdict.allowed,
        agrees,
    })
}
