//! The policy resolver.
