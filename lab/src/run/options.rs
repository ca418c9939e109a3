//! What a run of cases is asked to do.

use std::{collections::BTreeMap, path::PathBuf};

use palisade::dataplane::Established;

use crate::control::Faults;

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Print a one-line reading of each table (the demo).
    pub narrate: bool,
    /// Judge with the reference evaluator only: no kernel, no root.
    pub model: bool,
    /// What policy changes do to established connections.
    pub established: Established,
    /// Run each case against a real API server, with a `palisade agent` process per node
    /// (`agent_binary`, or the `palisade` beside this binary).
    pub apiserver: bool,
    pub agent_binary: Option<PathBuf>,
    /// Faults injected in `apiserver` runs.
    pub faults: Faults,
    /// With `apiserver`: after the last step of the last case, keep the lab up (API server,
    /// agents, pods) and say how to reach it, until interrupted.
    pub hold: bool,
}

/// One line saying, for each destination, who reached it.
pub fn narrate(table: &crate::table::Table, observed: &BTreeMap<(String, String), bool>) -> String {
    let mut parts = Vec::new();
    for col in &table.columns {
        let sources: Vec<&String> = table.rows.iter().filter(|r| *r != col).collect();
        let reached: Vec<&str> = sources
            .iter()
            .filter(|r| observed.get(&((**r).clone(), col.clone())) == Some(&true))
            .map(|r| r.as_str())
            .collect();
        let text = match (reached.len(), sources.len()) {
            (0, _) => format!("{col} is reachable from nobody"),
            (n, m) if n == m => format!("{col} is reachable from everyone"),
            _ => format!("{col} is reachable only from {}", reached.join(", ")),
        };
        parts.push(text);
    }
    parts.join("; ")
}
