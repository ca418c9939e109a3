//! netperf and netserver from Debian, each in its pod's namespace (`nsenter --net`) and pinned
//! to its own core (`taskset`): every server on CPU 0, every client on CPU 1, so the measured
//! pair and the floor pair run on the same cores.
//!
//! TCP_CRR runs a number of transactions rather than a time: a timed TCP_CRR run returns about
//! four seconds after its timer (5.0 s of wall time for `-l 1`, on loopback as between pods),
//! which would make every short run five times as long as what it measures.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::synth::{CONTROL_PORT, TCP_DATA_PORT, UDP_DATA_PORT};

/// The tests, with the data port each uses.
pub const TESTS: &[(&str, u16)] = &[
    ("TCP_RR", TCP_DATA_PORT),
    ("TCP_CRR", TCP_DATA_PORT),
    ("TCP_STREAM", TCP_DATA_PORT),
    ("UDP_RR", UDP_DATA_PORT),
];

/// How long one run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    Seconds(u32),
    Transactions(u64),
}

impl Length {
    /// netperf's `-l`: a time, or (negative) a number of transactions.
    fn arg(self) -> String {
        match self {
            Self::Seconds(s) => s.to_string(),
            Self::Transactions(n) => format!("-{n}"),
        }
    }

    /// An upper bound of the run's wall time, past which the path is taken as blocked.
    fn deadline(self) -> Duration {
        match self {
            Self::Seconds(s) => Duration::from_secs(u64::from(s) + 15),
            Self::Transactions(_) => Duration::from_secs(30),
        }
    }
}

/// netserver in a server pod, listening on `addr`; killed when dropped.
pub struct Netserver {
    child: Child,
}

impl Netserver {
    pub fn start(netns: &Path, addr: Ipv4Addr) -> Result<Self> {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["taskset", "-c", "0", "netserver", "-D", "-f", "-4", "-L"])
            .arg(addr.to_string())
            .args(["-p", &CONTROL_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting netserver (is netperf installed? `cargo xtask setup`)")?;
        // It listens within milliseconds; the first test retries anyway.
        thread::sleep(Duration::from_millis(300));
        Ok(Self { child })
    }
}

impl Drop for Netserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One netperf run from a client pod (namespace `netns`) to the netserver at `server`; the
/// figure netperf reports (transactions per second, or 10^6 bits per second for TCP_STREAM)
/// and its unit.
pub fn run(
    netns: &Path,
    server: Ipv4Addr,
    test: &str,
    port: u16,
    length: Length,
) -> Result<(f64, String)> {
    let mut last = None;
    for _attempt in 0..3 {
        match run_once(netns, server, test, port, length) {
            Ok(result) => return Ok(result),
            Err(e) => {
                last = Some(e);
                thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("netperf {test}: no attempt made")))
}

fn run_once(
    netns: &Path,
    server: Ipv4Addr,
    test: &str,
    port: u16,
    length: Length,
) -> Result<(f64, String)> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["taskset", "-c", "1", "netperf", "-H"])
        .arg(server.to_string())
        .args(["-p", &CONTROL_PORT.to_string(), "-t", test, "-l"])
        .arg(length.arg())
        .args(["-P", "0", "--", "-P"])
        .arg(format!(",{port}"))
        .args(["-o", "THROUGHPUT,THROUGHPUT_UNITS"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting netperf")?;
    // A blocked path would leave netperf waiting for ever.
    let deadline = Instant::now() + length.deadline();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("netperf {test} did not finish in time: is the path blocked?");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "netperf {test}: {}: {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut fields = line.split(',');
    let value: f64 = fields
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .with_context(|| format!("netperf {test}: unexpected output {stdout:?}"))?;
    let unit = fields.next().unwrap_or("").trim().to_owned();
    Ok((value, unit))
}
