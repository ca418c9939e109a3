//! The contract between Palisade's eBPF programs and its agent: map names, key and value
//! layouts, reserved identities and drop reasons. Everything here is `#[repr(C)]`, padded
//! explicitly and `bytemuck::Pod`, so a layout mistake is a compile error, and the sizes are
//! asserted next to each layout.
//!
//! How a packet is judged, step by step, is [`precedence`]; its policy lookup ([`admit`]) is
//! written once there, for the programs and the agent alike. The rest is split by concern:
//! [`maps`] (names and capacities), [`keys`] (what the maps hold), [`reasons`] (counters, drop
//! and allow reasons) and [`events`] (flow events and their settings). Every item is re-exported
//! here, so `palisade_common::X` names it wherever it is defined.
#![no_std]

pub mod events;
pub mod keys;
pub mod maps;
pub mod precedence;
pub mod reasons;
#[cfg(feature = "user")]
mod user;

pub use events::*;
pub use keys::*;
pub use maps::*;
pub use precedence::*;
pub use reasons::*;
