//! Why packets pass and why they are dropped: the counters of [`MAP_STATS`] ([`Stat`] and one per
//! [`DropReason`]) and the reasons a [`FlowEvent`] gives.

#[cfg(doc)]
use crate::{FlowEvent, MAP_EVENTS, MAP_LOCAL_ADDRS, MAP_STATS};

/// Indices of [`MAP_STATS`], a per-CPU array of `u64` counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// A packet of a tracked flow (forward or reply) passed.
    CtHit = 0,
    /// A new flow was admitted by policy (or the endpoint is not isolated).
    NewFlowAllowed = 1,
    /// A packet that is not IP passed.
    NotIp = 2,
    /// Conntrack insert failed (the flow still passes; its replies are judged as new flows).
    CtInsertFailed = 3,
    /// A new flow to a Service address left for judgement after translation.
    EgressDeferred = 4,
    /// A deferred flow was judged after translation (allowed or dropped).
    EgressJudgedAfterNat = 5,
    /// A flow event was sent to [`MAP_EVENTS`].
    EventsSent = 6,
    /// A flow event was over its source's budget and not sent (counted in the source's next
    /// event, [`FlowEvent::suppressed`]).
    EventsSuppressed = 7,
    /// A flow event was lost: the ring buffer was full (the agent is behind).
    EventsLost = 8,
    /// A flow that policy would drop passed because its endpoint is in audit mode.
    AuditPassed = 9,
    /// A tracked flow's entry had expired; the packet was judged as new.
    CtExpired = 10,
    /// A later fragment passed with its datagram's first fragment's verdict.
    FragmentPassed = 11,
}

/// Why a packet was dropped; the index of its counter in [`MAP_STATS`] is
/// `STAT_DROP_BASE + reason`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The destination pod's ingress policy does not admit the flow.
    PolicyIngress = 0,
    /// The source pod's egress policy does not admit the flow.
    PolicyEgress = 1,
    /// A program ran on an interface with no endpoint entry.
    NoEndpoint = 2,
    /// Truncated or malformed IP/L4 header.
    Malformed = 3,
    /// A non-first IP fragment for an isolated endpoint whose first fragment did not pass there
    /// within [`FRAGMENT_LIFETIME_NS`](crate::FRAGMENT_LIFETIME_NS) (it carries no ports).
    Fragment = 4,
    /// IPv6 extension headers for an isolated endpoint.
    Ipv6ExtensionHeader = 5,
    /// A flow that must be remembered to be judged (a Service flow awaiting translation) could
    /// not be recorded.
    TrackingFull = 6,
    /// A pod sent a packet from an address that is not its own ([`MAP_LOCAL_ADDRS`]).
    SpoofedSource = 7,
    /// A packet left for judgement after translation came back without its record (evicted,
    /// expired or taken by another packet): its egress cannot be judged.
    ServiceUnjudged = 8,
    /// A packet arrived on an uplink with the source address of a local pod or of the node
    /// itself (or, in strict mode, of a pod the route back does not reach through that link).
    SpoofedFromUplink = 9,
    /// A ClusterNetworkPolicy rule with action `Deny` on the destination pod's ingress: the
    /// event's class names it.
    TierIngress = 10,
    /// A ClusterNetworkPolicy `Deny` on the source pod's egress.
    TierEgress = 11,
}

pub const STAT_DROP_BASE: u32 = 16;
pub const DROP_REASONS: [DropReason; 12] = [
    DropReason::PolicyIngress,
    DropReason::PolicyEgress,
    DropReason::NoEndpoint,
    DropReason::Malformed,
    DropReason::Fragment,
    DropReason::Ipv6ExtensionHeader,
    DropReason::TrackingFull,
    DropReason::SpoofedSource,
    DropReason::ServiceUnjudged,
    DropReason::SpoofedFromUplink,
    DropReason::TierIngress,
    DropReason::TierEgress,
];
pub const STAT_SLOTS: u32 = 32;

/// Why a flow was admitted.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowReason {
    /// No policy selects the endpoint for this direction.
    NotIsolated = 0,
    /// A rule admits it: [`FlowEvent::class`] is the lowest class both the peer and the port
    /// hold, which names the rules (of that port set) that can have admitted it.
    Policy = 1,
    /// Ingress from the node itself.
    FromHost = 2,
}

impl AllowReason {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::NotIsolated),
            1 => Some(Self::Policy),
            2 => Some(Self::FromHost),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::NotIsolated => "not-isolated",
            Self::Policy => "policy",
            Self::FromHost => "from-host",
        }
    }
}

impl DropReason {
    pub const fn from_u8(value: u8) -> Option<Self> {
        if (value as usize) < DROP_REASONS.len() {
            Some(DROP_REASONS[value as usize])
        } else {
            None
        }
    }

    pub const fn stat_index(self) -> u32 {
        STAT_DROP_BASE + self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::PolicyIngress => "policy-ingress",
            Self::PolicyEgress => "policy-egress",
            Self::NoEndpoint => "no-endpoint",
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::Ipv6ExtensionHeader => "ipv6-extension-header",
            Self::TrackingFull => "tracking-full",
            Self::SpoofedSource => "spoofed-source",
            Self::ServiceUnjudged => "service-unjudged",
            Self::SpoofedFromUplink => "spoofed-from-uplink",
            Self::TierIngress => "cluster-policy-ingress",
            Self::TierEgress => "cluster-policy-egress",
        }
    }
}

const _: () = assert!(STAT_DROP_BASE + DROP_REASONS.len() as u32 <= STAT_SLOTS);
