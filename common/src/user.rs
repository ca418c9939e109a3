//! What only the agent needs (feature `user`; the eBPF crate never enables it): the map types as
//! `aya::Pod`.

use crate::{
    Addr, CtKey, CtValue, EndpointInfo, EventLimit, FlowConfig, FlowEvent, IdentityValue,
    OriginalKey, OriginalValue, PeerKey, PortKey,
};

// SAFETY: all of these are `bytemuck::Pod` (no padding, every bit pattern valid).
unsafe impl aya::Pod for Addr {}
unsafe impl aya::Pod for EndpointInfo {}
unsafe impl aya::Pod for IdentityValue {}
unsafe impl aya::Pod for PeerKey {}
unsafe impl aya::Pod for PortKey {}
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for CtValue {}
unsafe impl aya::Pod for OriginalKey {}
unsafe impl aya::Pod for OriginalValue {}
unsafe impl aya::Pod for FlowEvent {}
unsafe impl aya::Pod for FlowConfig {}
unsafe impl aya::Pod for EventLimit {}
