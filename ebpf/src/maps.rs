//! The maps, named as `palisade_common::maps` declares them (the agent checks the names on load),
//! and [`bump`], which adds one to a counter of [`STATS`].

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use palisade_common::{
    Addr, ClassMask, CtKey, CtTimeouts, CtValue, EVENT_MEMO_SLOTS, EVENTS_RING_BYTES, EndpointInfo,
    EndpointKey, EventLimit, EventMemo, FlowConfig, FlowEvent, FragKey, FragValue, IdentityValue,
    MAX_CIDRS, MAX_CONNTRACK, MAX_ENDPOINTS, MAX_EVENT_LIMITS, MAX_FRAGMENTS, MAX_LOCAL_ADDRS,
    MAX_ORIGINAL_DST, MAX_PEERS, MAX_POD_IDENTITIES, MAX_PORTS, MAX_SERVICE_RANGES, OriginalKey,
    OriginalValue, PeerKey, PortKey, STAT_SLOTS,
};

#[map(name = "PAL_ENDPOINTS")]
pub(crate) static ENDPOINTS: HashMap<EndpointKey, EndpointInfo> =
    HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map(name = "PAL_POD_IDS")]
pub(crate) static POD_IDS: HashMap<Addr, IdentityValue> =
    HashMap::with_max_entries(MAX_POD_IDENTITIES, 0);

#[map(name = "PAL_CIDRS")]
pub(crate) static CIDRS: LpmTrie<Addr, IdentityValue> = LpmTrie::with_max_entries(MAX_CIDRS, 0);

#[map(name = "PAL_PEERS")]
pub(crate) static PEERS: HashMap<PeerKey, ClassMask> = HashMap::with_max_entries(MAX_PEERS, 0);

#[map(name = "PAL_PORTS")]
pub(crate) static PORTS: LpmTrie<PortKey, ClassMask> = LpmTrie::with_max_entries(MAX_PORTS, 0);

#[map(name = "PAL_CT")]
pub(crate) static CT: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(MAX_CONNTRACK, 0);

#[map(name = "PAL_CT_CONFIG")]
pub(crate) static CT_CONFIG: Array<CtTimeouts> = Array::with_max_entries(1, 0);

#[map(name = "PAL_FRAGS")]
pub(crate) static FRAGMENTS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(MAX_FRAGMENTS, 0);

#[map(name = "PAL_SERVICES")]
pub(crate) static SERVICES: LpmTrie<Addr, u32> = LpmTrie::with_max_entries(MAX_SERVICE_RANGES, 0);

#[map(name = "PAL_ORIG_DST")]
pub(crate) static ORIGINAL_DST: LruHashMap<OriginalKey, OriginalValue> =
    LruHashMap::with_max_entries(MAX_ORIGINAL_DST, 0);

#[map(name = "PAL_LOCAL_ADDRS")]
pub(crate) static LOCAL_ADDRS: HashMap<Addr, EndpointKey> =
    HashMap::with_max_entries(MAX_LOCAL_ADDRS, 0);

#[map(name = "PAL_EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map(name = "PAL_EVENT_LIMITS")]
pub(crate) static EVENT_LIMITS: LruHashMap<Addr, EventLimit> =
    LruHashMap::with_max_entries(MAX_EVENT_LIMITS, 0);

#[map(name = "PAL_EVENT_MEMO")]
pub(crate) static EVENT_MEMO: PerCpuArray<EventMemo> =
    PerCpuArray::with_max_entries(EVENT_MEMO_SLOTS, 0);

#[map(name = "PAL_EVENT_SCRATCH")]
pub(crate) static EVENT_SCRATCH: PerCpuArray<FlowEvent> = PerCpuArray::with_max_entries(2, 0);

#[map(name = "PAL_FLOW_CONFIG")]
pub(crate) static FLOW_CONFIG: Array<FlowConfig> = Array::with_max_entries(1, 0);

#[map(name = "PAL_STATS")]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);

#[inline(always)]
pub(crate) fn bump(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}
