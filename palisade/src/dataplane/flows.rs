//! The flow-event side of the dataplane: the programs' event settings, the ring buffer the agent
//! reads, and the verdict the live maps give for a new flow (for `palisade explain` against a
//! running agent).

use std::net::IpAddr;

use aya::maps::{Array, HashMap, LpmTrie, MapData, RingBuf, lpm_trie::Key};
use palisade_common::{
    Addr, CFG_AUDIT_ALL, CFG_EVENTS, ClassMask, DIR_INGRESS, EP_AUDIT, EP_EGRESS_ISOLATED,
    EP_INGRESS_ISOLATED, EndpointInfo, FlowConfig, IDENTITY_HOST, IdentityValue, MAP_CIDRS,
    MAP_ENDPOINTS, MAP_EVENTS, MAP_FLOW_CONFIG, MAP_PEERS, MAP_POD_IDENTITIES, MAP_PORTS,
    PORT_KEY_FIXED_BITS, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PeerKey, PortKey,
};

use super::{Dataplane, DataplaneError};
use crate::policy::compile::addr_of;

/// What the programs do about flow events and audit, for the whole node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSettings {
    /// Send flow events at all.
    pub events: bool,
    /// Events each source address may cause per second; the rest are counted, not sent.
    pub events_per_second: u32,
    /// Every endpoint of the node in audit mode.
    pub audit_all: bool,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            events: true,
            events_per_second: 100,
            audit_all: false,
        }
    }
}

/// How the live maps judge a new flow at one endpoint and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveDecision {
    /// No endpoint entry for the interface: the programs drop everything.
    NoEndpoint,
    NotIsolated,
    FromHost,
    /// Admitted by this class (the lowest both peer and port hold).
    Class(u8),
    /// Dropped by policy; `audit`: reported and passed instead.
    Denied {
        audit: bool,
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
    /// with `peer` to `protocol`/`port`: the lookups the programs make (steps 2 and 5-8 of
    /// the precedence in `palisade_common`), read from the kernel's maps, not this agent's copy.
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
        let isolated = if direction == DIR_INGRESS {
            EP_INGRESS_ISOLATED
        } else {
            EP_EGRESS_ISOLATED
        };
        if endpoint.flags & isolated == 0 {
            return Ok(LiveDecision::NotIsolated);
        }
        let d = usize::from(direction);
        let (mut peer_mask, mut port_mask) = (endpoint.any_peer[d], endpoint.any_port[d]);
        let addr = addr_of(&peer);
        let identities: HashMap<_, Addr, IdentityValue> =
            HashMap::try_from(map(MAP_POD_IDENTITIES)?)
                .map_err(map_err(MAP_POD_IDENTITIES, "open"))?;
        let peers: HashMap<_, PeerKey, ClassMask> =
            HashMap::try_from(map(MAP_PEERS)?).map_err(map_err(MAP_PEERS, "open"))?;
        let classes_of = |peer: u32| -> Result<ClassMask, DataplaneError> {
            let key = PeerKey {
                endpoint: endpoint.id,
                peer,
                direction,
                _pad: [0; 3],
            };
            Ok(absent_is_none(peers.get(&key, 0), MAP_PEERS)?.unwrap_or(0))
        };
        if let Some(identity) = absent_is_none(identities.get(&addr, 0), MAP_POD_IDENTITIES)? {
            if identity.identity == IDENTITY_HOST && direction == DIR_INGRESS {
                return Ok(LiveDecision::FromHost);
            }
            peer_mask |= classes_of(identity.identity)?;
        }
        let cidrs: LpmTrie<_, Addr, IdentityValue> =
            LpmTrie::try_from(map(MAP_CIDRS)?).map_err(map_err(MAP_CIDRS, "open"))?;
        // A lookup in an LPM trie is a longest-prefix match, as in the programs.
        if let Some(cidr) = absent_is_none(cidrs.get(&Key::new(128, addr), 0), MAP_CIDRS)? {
            peer_mask |= classes_of(cidr.identity)?;
        }
        if matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
            let ports: LpmTrie<_, PortKey, ClassMask> =
                LpmTrie::try_from(map(MAP_PORTS)?).map_err(map_err(MAP_PORTS, "open"))?;
            let key = PortKey {
                endpoint: endpoint.id,
                direction,
                protocol,
                port_be: port.to_be_bytes(),
            };
            let key = Key::new(PORT_KEY_FIXED_BITS + 16, key);
            port_mask |= absent_is_none(ports.get(&key, 0), MAP_PORTS)?.unwrap_or(0);
        }
        let admitting = peer_mask & port_mask;
        if admitting != 0 {
            return Ok(LiveDecision::Class(admitting.trailing_zeros() as u8));
        }
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
        })
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
