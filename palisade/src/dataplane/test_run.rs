//! Running a loaded program against one crafted frame (`BPF_PROG_TEST_RUN`): verdict tests
//! without a network namespace, an interface or a pod ([`Dataplane::counters`] shows what the
//! run counted).
//!
//! aya 0.14 wraps the syscall ([`TestRun`] on [`SchedClassifier`]); what it leaves to the caller
//! is the context. The kernel's `bpf_prog_test_run_skb` builds the skb on the device named by the
//! `ifindex` of the `struct __sk_buff` passed as `ctx_in` (loopback when it is 0 or 1), and the
//! programs read that device's index to find their endpoint ([`palisade_common::MAP_ENDPOINTS`]).
//! So a test writes its endpoint under ifindex 1 and runs with [`LOOPBACK_IFINDEX`]; an endpoint
//! written under any other index leaves loopback an interface the programs do not know.
//!
//! The kernel checks the frame before the program sees it: recent kernels (6.18 here) refuse with
//! `EINVAL` a frame whose ethertype is IPv4 or IPv6 but which ends inside the fixed IP header, so
//! that kind of truncation cannot be tested this way.

use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};

use palisade_common::PROG_EMPTY;

use super::{Dataplane, DataplaneError, classifier};

/// The loopback device's index in every network namespace; what a test run's skb sits on when
/// the context names no other device.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Offset of `ifindex` in the kernel's `struct __sk_buff` (UAPI, stable since v4.1). The kernel
/// accepts a prefix of the struct and zero-fills the rest; every field before `ifindex` must be
/// zero or one the test-run path accepts (`mark`, `priority`).
const SKB_IFINDEX_OFFSET: usize = 40;
/// Offset of `mark` in `struct __sk_buff`.
const SKB_MARK_OFFSET: usize = 8;

/// What one run of a program returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The TC action (`TC_ACT_UNSPEC` is -1, `TC_ACT_SHOT` 2).
    pub action: i32,
    /// Time in the program, as the kernel measured it.
    pub duration: Duration,
}

impl Dataplane {
    /// Runs the loaded program `name` once on `frame` (an Ethernet frame, at least 14 bytes), as
    /// if it arrived on the interface `ifindex`, which must exist in the calling thread's network
    /// namespace. Maps are the live ones: what the run reads was written by [`Self::sync`] and
    /// what it writes (conntrack, counters) stays.
    pub fn test_run(
        &self,
        name: &'static str,
        frame: &[u8],
        ifindex: u32,
    ) -> Result<TestRunOutcome, DataplaneError> {
        self.test_run_repeat(name, frame, ifindex, 1)
    }

    /// [`Self::test_run`] `repeat` times in the kernel (one syscall); the duration is the
    /// kernel's mean per run. Every run after the first sees what the earlier ones wrote (a new
    /// flow's first run tracks it, so the others hit conntrack).
    pub fn test_run_repeat(
        &self,
        name: &'static str,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<TestRunOutcome, DataplaneError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or(super::missing_program(name))?
            .try_into()
            .map_err(super::not_a_classifier(name))?;
        self.run_with_context(name, program, frame, ifindex, 0, repeat)
            .map(|(outcome, _)| outcome)
    }

    /// [`Self::test_run`] on an skb carrying `mark`; also returns the mark the program left on
    /// it (what the next hook of the packet's way would see).
    pub fn test_run_marked(
        &self,
        name: &'static str,
        frame: &[u8],
        ifindex: u32,
        mark: u32,
    ) -> Result<(TestRunOutcome, u32), DataplaneError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or(super::missing_program(name))?
            .try_into()
            .map_err(super::not_a_classifier(name))?;
        self.run_with_context(name, program, frame, ifindex, mark, 1)
    }

    fn run_with_context(
        &self,
        name: &'static str,
        program: &SchedClassifier,
        frame: &[u8],
        ifindex: u32,
        mark: u32,
        repeat: u32,
    ) -> Result<(TestRunOutcome, u32), DataplaneError> {
        let mut skb = [0u8; SKB_IFINDEX_OFFSET + 4];
        skb[SKB_IFINDEX_OFFSET..].copy_from_slice(&ifindex.to_ne_bytes());
        skb[SKB_MARK_OFFSET..SKB_MARK_OFFSET + 4].copy_from_slice(&mark.to_ne_bytes());
        // The kernel writes the whole `struct __sk_buff` back (192 bytes in 6.x), or fails
        // with ENOSPC.
        let mut out = [0u8; 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&skb),
                ctx_out: Some(&mut out),
                repeat,
                ..TestRunOptions::new()
            })
            .map_err(|source| DataplaneError::Program {
                what: "test-running",
                name,
                source,
            })?;
        let mark_out = u32::from_ne_bytes(
            out[SKB_MARK_OFFSET..SKB_MARK_OFFSET + 4]
                .try_into()
                .expect("four bytes"),
        );
        Ok((
            TestRunOutcome {
                action: result.return_value.cast_signed(),
                duration: result.duration,
            },
            mark_out,
        ))
    }
}

impl Dataplane {
    /// Loads [`PROG_EMPTY`], the do-nothing classifier benchmarks compare with; then
    /// [`Self::test_run_repeat`] can run it. Agents never load it.
    pub fn load_empty_program(&mut self) -> Result<(), DataplaneError> {
        let program = classifier(&mut self.ebpf, PROG_EMPTY)?;
        if program.fd().is_ok() {
            return Ok(());
        }
        program.load().map_err(|source| DataplaneError::Program {
            what: "loading",
            name: PROG_EMPTY,
            source,
        })
    }
}
