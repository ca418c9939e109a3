//! The flow-event side of the dataplane: the programs' event settings, the ring buffer the agent
//! reads, and the verdict the live maps give for a new flow (for `palisade explain` against a
//! running agent).

use std::net::IpAddr;

use aya::maps::{Array, HashMap, LpmTrie, MapData, RingBuf, lpm_trie::Key};
use palisade_common::{
    Addr, Admission, CFG_AUDIT_ALL, CFG_EVENTS, CFG_STRICT_UPLINK, ClassMask, EP_AUDIT,
    EndpointInfo, FlowConfig, IdentityValue, MAP_CIDRS, MAP_ENDPOINTS, MAP_EVENTS, MAP_FLOW_CONFIG,
    MAP_PEERS, MAP_POD_IDENTITIES, MAP_PORTS, PORT_KEY_FIXED_BITS, PeerKey, PolicyMaps, PortKey,
    admit,
};

use super::{Dataplane, DataplaneError};

/// What the programs do about flow events and audit, and how strictly they check what
/// arrives on uplinks, for the whole node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSettings {
    /// Send flow events at all.
    pub events: bool,
    /// Events each source address may cause per second; the rest are counted, not sent.
    pub events_per_second: u32,
    /// Every endpoint of the node in audit mode.
    pub audit_all: bool,
    /// Strict uplinks: a remote pod's address is accepted from an uplink only when the route
    /// back to it leaves through that uplink ([`CFG_STRICT_UPLINK`]).
    pub strict_uplink: bool,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            events: true,
            events_per_second: 100,
            audit_all: false,
            strict_uplink: false,
        }
    }
}

/// How the live maps judge a new flow at one endpoint and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveDecision {
    /// No endpoint entry for the interface: the programs drop everything.
    NoEndpoint,
    /// Not isolated, and no ClusterNetworkPolicy rule decides: the default.
    NotIsolated,
    FromHost,
    /// Admitted by this class (a NetworkPolicy class, or the tier rule that decides).
    Class(u8),
    /// Dropped by policy; `audit`: reported and passed instead. `tier_class`: the
    /// ClusterNetworkPolicy Deny class that decides (none: no NetworkPolicy class admits).
    Denied {
        audit: bool,
        tier_class: Option<u8>,
    },
}

fn missing(name: &'static str) -> DataplaneError {
    DataplaneError::Missing { kind: "map", name }
}

fn map_err(map: &'static str, op: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

impl Dataplane {
    /// Writes the node-wide event and audit settings; the programs read them on their next
    /// verdict (no reload).
    pub fn set_flow_settings(&mut self, settings: FlowSettings) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(MAP_FLOW_CONFIG)
            .ok_or(missing(MAP_FLOW_CONFIG))?;
        let mut array: Array<_, FlowConfig> =
            Array::try_from(map).map_err(map_err(MAP_FLOW_CONFIG, "open"))?;
        let mut flags = 0;
        if settings.events {
            flags |= CFG_EVENTS;
        }
        if settings.audit_all {
            flags |= CFG_AUDIT_ALL;
        }
        if settings.strict_uplink {
            flags |= CFG_STRICT_UPLINK;
        }
        let config = FlowConfig {
            flags,
            events_per_window: settings.events_per_second,
        };
        array
            .set(0, config, 0)
            .map_err(map_err(MAP_FLOW_CONFIG, "write"))?;
        self.flow_settings = settings;
        Ok(())
    }

    /// The ring buffer the programs send flow events to. It can be taken once; the reader owns
    /// it from then on (it stays valid while this dataplane, or its pins, keep the map).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DataplaneError> {
        let map = self.ebpf.take_map(MAP_EVENTS).ok_or(missing(MAP_EVENTS))?;
        RingBuf::try_from(map).map_err(map_err(MAP_EVENTS, "open"))
    }

    /// How the maps as they are now judge a new flow at endpoint `ifindex` in `direction`
    /// with `peer` to `protocol`/`port`: the lookups the programs make (steps 2 and 5-9 of
    /// `palisade_common::precedence`, through the same [`admit`]), read from the kernel's maps,
    /// not this agent's copy.
    pub fn live_decision(
        &self,
        ifindex: u32,
        direction: u8,
        peer: IpAddr,
        protocol: u8,
        port: u16,
    ) -> Result<LiveDecision, DataplaneError> {
        let map = |name: &'static str| self.ebpf.map(name).ok_or(missing(name));
        let endpoints: HashMap<_, u32, EndpointInfo> =
            HashMap::try_from(map(MAP_ENDPOINTS)?).map_err(map_err(MAP_ENDPOINTS, "open"))?;
        let Some(endpoint) = absent_is_none(endpoints.get(&ifindex, 0), MAP_ENDPOINTS)? else {
            return Ok(LiveDecision::NoEndpoint);
        };
        if !endpoint.judged(direction) {
            return Ok(LiveDecision::NotIsolated);
        }
        let maps = LiveMaps {
            identities: HashMap::try_from(map(MAP_POD_IDENTITIES)?)
                .map_err(map_err(MAP_POD_IDENTITIES, "open"))?,
            cidrs: LpmTrie::try_from(map(MAP_CIDRS)?).map_err(map_err(MAP_CIDRS, "open"))?,
            peers: HashMap::try_from(map(MAP_PEERS)?).map_err(map_err(MAP_PEERS, "open"))?,
            ports: LpmTrie::try_from(map(MAP_PORTS)?).map_err(map_err(MAP_PORTS, "open"))?,
        };
        let peer = Addr::from(peer);
        let tier_class = match admit(&maps, &endpoint, direction, &peer, protocol, port)? {
            Admission::FromHost => return Ok(LiveDecision::FromHost),
            Admission::Class(class) => return Ok(LiveDecision::Class(class)),
            Admission::NoRule => return Ok(LiveDecision::NotIsolated),
            Admission::Denied => None,
            Admission::TierDenied(class) => Some(class),
        };
        let config: Array<_, FlowConfig> =
            Array::try_from(map(MAP_FLOW_CONFIG)?).map_err(map_err(MAP_FLOW_CONFIG, "open"))?;
        let audit_all = config
            .get(&0, 0)
            .map_err(map_err(MAP_FLOW_CONFIG, "read"))?
            .flags
            & CFG_AUDIT_ALL
            != 0;
        Ok(LiveDecision::Denied {
            audit: audit_all || endpoint.flags & EP_AUDIT != 0,
            tier_class,
        })
    }
}

/// The kernel's policy maps, as steps 6-9 read them ([`admit`]).
struct LiveMaps<'a> {
    identities: HashMap<&'a MapData, Addr, IdentityValue>,
    cidrs: LpmTrie<&'a MapData, Addr, IdentityValue>,
    peers: HashMap<&'a MapData, PeerKey, ClassMask>,
    ports: LpmTrie<&'a MapData, PortKey, ClassMask>,
}

impl PolicyMaps for LiveMaps<'_> {
    type Error = DataplaneError;

    fn pod_identity(&self, addr: &Addr) -> Result<Option<u32>, DataplaneError> {
        let identity = absent_is_none(self.identities.get(addr, 0), MAP_POD_IDENTITIES)?;
        Ok(identity.map(|value| value.identity))
    }

    fn cidr_identity(&self, addr: &Addr) -> Result<Option<u32>, DataplaneError> {
        // A lookup in an LPM trie is a longest-prefix match, as in the programs.
        let cidr = absent_is_none(self.cidrs.get(&Key::new(128, *addr), 0), MAP_CIDRS)?;
        Ok(cidr.map(|value| value.identity))
    }

    fn peer_classes(&self, key: &PeerKey) -> Result<ClassMask, DataplaneError> {
        Ok(absent_is_none(self.peers.get(key, 0), MAP_PEERS)?.unwrap_or(0))
    }

    fn port_classes(&self, key: &PortKey) -> Result<ClassMask, DataplaneError> {
        let key = Key::new(PORT_KEY_FIXED_BITS + 16, *key);
        Ok(absent_is_none(self.ports.get(&key, 0), MAP_PORTS)?.unwrap_or(0))
    }
}

/// A missing key is `None`; any other failure is an error.
fn absent_is_none<V>(
    result: Result<V, aya::maps::MapError>,
    map: &'static str,
) -> Result<Option<V>, DataplaneError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(DataplaneError::Map {
            map,
            op: "lookup",
            source,
        }),
    }
}
