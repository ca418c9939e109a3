//! Flow log lines, one per flow per interval rather than one per record.
//!
//! A denied flow is reported for every dropped packet: each SYN retransmission of a blocked
//! client, each retry of its connection (from a new source port). Logged one by one, one
//! blocked client made ~500 lines in 90 s (issue 18). So records are grouped by flow: the
//! source (address and pod, not port: a retry from a new port is the same attempt), the
//! destination (address, pod, port), protocol, verdict, direction, the judging pod, the reason
//! and the policies named. The first record of a flow is logged at once, as it is; the ones
//! after it are counted, and at the end of each interval one summary line says how many there
//! were, with the times of the first and the last. A flow silent for a whole interval is
//! forgotten: its next record is logged at once again.
//!
//! Memory is bounded: at most `max_flows` flows are tracked. A record of a new flow while the
//! table is full is not logged, only counted, and the interval's end says how many were left
//! out. Metrics (`palisade_flows_total`) and `palisade flows` still see every record.

use std::{collections::HashMap, net::IpAddr};

use crate::flows::{FlowRecord, FlowVerdict};

/// What makes two records the same flow for the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    verdict: FlowVerdict,
    direction: String,
    pod: Option<String>,
    reason: String,
    protocol: String,
    src: IpAddr,
    src_pod: Option<String>,
    dst: IpAddr,
    dst_port: u16,
    dst_pod: Option<String>,
    allowed_by: Vec<String>,
    isolated_by: Vec<String>,
    translated: bool,
}

impl FlowKey {
    fn of(record: &FlowRecord) -> Self {
        Self {
            verdict: record.verdict,
            direction: record.direction.clone(),
            pod: record.pod.clone(),
            reason: record.reason.clone(),
            protocol: record.protocol.clone(),
            src: record.src.ip,
            src_pod: record.src.pod.clone(),
            dst: record.dst.ip,
            dst_port: record.dst.port,
            dst_pod: record.dst.pod.clone(),
            allowed_by: record.allowed_by.clone(),
            isolated_by: record.isolated_by.clone(),
            translated: record.translated,
        }
    }
}

/// One tracked flow.
struct Tally {
    /// The first record of the flow (logged at once); a summary repeats its fields.
    first: FlowRecord,
    /// Records since the last line for this flow, and their times.
    count: u64,
    first_seen: String,
    last_seen: String,
    /// The kernel's suppressed counts carried by those records.
    suppressed: u64,
    /// A record arrived in the current interval (else the flow is forgotten at its end).
    active: bool,
}

/// A line due at the end of an interval.
#[derive(Debug, PartialEq, Eq)]
pub enum Summary {
    /// `count` more records of the flow `record` is the first of, since its last line.
    Flow {
        /// The flow's first record with the source port cleared (the summary is of every
        /// port) and the time of the first of the `count` records.
        record: Box<FlowRecord>,
        count: u64,
        first_seen: String,
        last_seen: String,
        suppressed: u64,
    },
    /// Records of new flows not logged because `max_flows` flows were tracked already.
    Overflow { records: u64, max_flows: usize },
}

pub struct Aggregator {
    max_flows: usize,
    flows: HashMap<FlowKey, Tally>,
    /// Records not logged this interval because the table was full.
    overflow: u64,
}

impl Aggregator {
    pub fn new(max_flows: usize) -> Self {
        Self {
            max_flows,
            flows: HashMap::new(),
            overflow: 0,
        }
    }

    /// Counts `record`; true when it is to be logged now (the first of its flow).
    pub fn record(&mut self, record: &FlowRecord) -> bool {
        let key = FlowKey::of(record);
        if let Some(tally) = self.flows.get_mut(&key) {
            tally.active = true;
            if tally.count == 0 {
                tally.first_seen.clone_from(&record.time);
            }
            tally.count += 1;
            tally.last_seen.clone_from(&record.time);
            tally.suppressed += u64::from(record.suppressed);
            return false;
        }
        if self.flows.len() >= self.max_flows {
            self.overflow += 1;
            return false;
        }
        self.flows.insert(
            key,
            Tally {
                first: record.clone(),
                count: 0,
                first_seen: String::new(),
                last_seen: String::new(),
                suppressed: 0,
                active: true,
            },
        );
        true
    }

    /// The end of an interval: a summary of each flow with records since its last line, and
    /// of what the full table left out. Flows without a record in this interval are
    /// forgotten.
    pub fn end_interval(&mut self) -> Vec<Summary> {
        let mut out = Vec::new();
        self.flows.retain(|_, tally| {
            if tally.count > 0 {
                let mut record = tally.first.clone();
                record.src.port = 0;
                record.suppressed = 0;
                record.time.clone_from(&tally.first_seen);
                out.push(Summary::Flow {
                    record: Box::new(record),
                    count: tally.count,
                    first_seen: std::mem::take(&mut tally.first_seen),
                    last_seen: std::mem::take(&mut tally.last_seen),
                    suppressed: tally.suppressed,
                });
                tally.count = 0;
                tally.suppressed = 0;
            }
            std::mem::replace(&mut tally.active, false)
        });
        // Stable output for the log reader (and the tests): in time order.
        out.sort_by(|a, b| match (a, b) {
            (Summary::Flow { first_seen: a, .. }, Summary::Flow { first_seen: b, .. }) => a.cmp(b),
            _ => std::cmp::Ordering::Equal,
        });
        if self.overflow > 0 {
            out.push(Summary::Overflow {
                records: std::mem::take(&mut self.overflow),
                max_flows: self.max_flows,
            });
        }
        out
    }

    /// Flows tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.flows.len()
    }
}

#[cfg(test)]
mod tests;
