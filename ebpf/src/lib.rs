//! Library target only so that the agent can name this crate as a build-dependency (edits here
//! then rebuild the agent). The programs are the `palisade` binary target, built for BPF.
#![no_std]
