//! How a [`Verdict`] reads in `palisade explain` and in test failures: one clause per
//! direction, naming the rules that admit the connection or the policies that isolate the pod.

use std::fmt;

use palisade_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use super::{Direction, DirectionVerdict, NotAPod, TierRuleId, Verdict};

/// `clusternetworkpolicy deny-x (Admin, priority 10) rule 2 "deny-from-x"`.
struct TierRule<'a>(&'a TierRuleId);

impl fmt::Display for TierRule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = self.0;
        write!(
            f,
            "clusternetworkpolicy {} ({:?}, priority {}) ",
            rule.policy, rule.tier, rule.priority
        )?;
        match rule.index {
            Some(index) if rule.name.is_empty() => write!(f, "rule {index}"),
            Some(index) => write!(f, "rule {index} {:?}", rule.name),
            None => f.write_str("(invalid: fails closed to deny all)"),
        }
    }
}

/// "TCP", "UDP", ... or the number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        PROTO_TCP => "TCP".into(),
        PROTO_UDP => "UDP".into(),
        PROTO_SCTP => "SCTP".into(),
        PROTO_ICMP => "ICMP".into(),
        PROTO_ICMPV6 => "ICMPv6".into(),
        other => format!("protocol {other}"),
    }
}

/// `allowed: egress of x/a not isolated; ingress of y/b allowed by y/allow-x rule ingress[0]`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = if self.allowed { "allowed" } else { "denied" };
        if self.egress == DirectionVerdict::Itself {
            return write!(
                f,
                "{outcome}: {} to itself (policy never applies to a pod's own traffic)",
                self.from
            );
        }
        let flow = match self.protocol {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
                format!("{}/{}", protocol_name(self.protocol), self.port)
            }
            other => protocol_name(other),
        };
        let side = |f: &mut fmt::Formatter<'_>,
                    direction: Direction,
                    verdict: &DirectionVerdict,
                    subject: &str,
                    peer: &str| {
            let d = direction.name();
            match verdict {
                DirectionVerdict::NotApplicable(NotAPod::Address) => {
                    write!(f, "{d}: {subject} is not a pod")
                }
                DirectionVerdict::NotApplicable(NotAPod::HostNetwork) => write!(
                    f,
                    "{d}: {subject} is a hostNetwork pod (not subject to policy)"
                ),
                DirectionVerdict::NotApplicable(NotAPod::Unknown) => {
                    write!(f, "{d}: {subject} is not a known pod")
                }
                DirectionVerdict::Itself => write!(f, "{d} of {subject} to itself"),
                DirectionVerdict::NotIsolated => write!(f, "{d} of {subject} not isolated"),
                DirectionVerdict::FromNode => {
                    write!(f, "{d} of {subject} from its own node (always allowed)")
                }
                DirectionVerdict::AllowedBy(rules) => {
                    write!(f, "{d} of {subject} allowed by ")?;
                    for (i, rule) in rules.iter().enumerate() {
                        let sep = if i == 0 { "" } else { ", " };
                        write!(f, "{sep}{} rule {d}[{}]", rule.policy, rule.index)?;
                    }
                    Ok(())
                }
                DirectionVerdict::AcceptedByTier(rule) => {
                    write!(f, "{d} of {subject} accepted by {}", TierRule(rule))
                }
                DirectionVerdict::DeniedByTier(rule) => {
                    write!(f, "{d} of {subject} denied by {}", TierRule(rule))
                }
                DirectionVerdict::Denied { isolating } => {
                    let names: Vec<String> = isolating.iter().map(ToString::to_string).collect();
                    let with = if direction == Direction::Ingress {
                        "from"
                    } else {
                        "to"
                    };
                    write!(
                        f,
                        "{d} of {subject} denied: isolated by {} and no rule admits {flow} {with} {peer}",
                        names.join(", ")
                    )
                }
            }
        };
        write!(f, "{outcome}: ")?;
        side(f, Direction::Egress, &self.egress, &self.from, &self.to)?;
        write!(f, "; ")?;
        side(f, Direction::Ingress, &self.ingress, &self.to, &self.from)
    }
}
