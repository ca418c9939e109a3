//! The TC action codes the hooks return. Under TCX, `TC_ACT_UNSPEC` hands the packet to the
//! next program (another CNI's) rather than forcing a pass; `TC_ACT_SHOT` drops it.

use aya_ebpf::bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC};

/// Not ours to stop: the next program, or the kernel, decides.
pub(crate) const PASS: i32 = TC_ACT_UNSPEC;
/// Dropped.
pub(crate) const DROP: i32 = TC_ACT_SHOT as i32;
