//! The programs' one clock: the kernel's coarse monotonic clock, a read of the time the last
//! tick cached, where `bpf_ktime_get_ns` reads the clock source (a few times the cost, on the
//! path of every tracked packet). It lags by one tick at most; every lifetime it measures is a
//! second or more (conntrack's timeouts, a fragment's or a Service record's life, the event
//! budget's window). The agent reads `CLOCK_MONOTONIC`, the same clock to within that tick.
//! All of them read this one: comparing a coarse time with a fine one could see time go back.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

/// Now, in nanoseconds of `CLOCK_MONOTONIC` (coarse).
#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}
