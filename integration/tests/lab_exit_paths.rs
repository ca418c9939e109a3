//! The lab removes everything it created on every exit path, and a leftover of a killed run is
//! harmless to the next one. Runs the real binary; needs root.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

fn lab() -> Command {
    palisade_integration::require_root();
    Command::new(palisade_integration::lab_bin())
}

fn quick_start() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quick-start")
}

/// Lab namespaces of the process `pid`.
fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("pal{pid}-");
    fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn interrupting_a_run_removes_its_namespaces() {
    let mut child = lab()
        .args(["run"])
        .arg(quick_start())
        .stdout(Stdio::null())
        .spawn()
        .expect("start palisade");
    let pid = child.id();
    // Wait until the run has built something, then interrupt it.
    let start = Instant::now();
    while namespaces_of(pid).is_empty() && start.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !namespaces_of(pid).is_empty(),
        "the run never created its namespaces"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "an interrupted run must not report success"
    );
    assert_eq!(
        namespaces_of(pid),
        Vec::<String>::new(),
        "namespaces left behind after SIGINT"
    );
}

#[test]
fn a_killed_run_leaves_nothing_that_stops_the_next_one() {
    let mut child = lab()
        .args(["run"])
        .arg(quick_start())
        .stdout(Stdio::null())
        .spawn()
        .expect("start palisade");
    let pid = child.id();
    let start = Instant::now();
    while namespaces_of(pid).len() < 2 && start.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(
        !namespaces_of(pid).is_empty(),
        "SIGKILL cannot clean up; this test needs leftovers"
    );
    // The next run starts cleanly, removes the dead run's namespaces, and passes.
    let out = lab()
        .args(["run"])
        .arg(quick_start())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        namespaces_of(pid),
        Vec::<String>::new(),
        "stale namespaces of a dead run survive"
    );
}

#[test]
fn clean_removes_ended_runs_only() {
    let mut live = lab()
        .args(["run"])
        .arg(quick_start())
        .stdout(Stdio::null())
        .spawn()
        .expect("start palisade");
    let pid = live.id();
    let start = Instant::now();
    while namespaces_of(pid).len() < 2 && start.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(50));
    }
    let before = namespaces_of(pid);
    assert!(
        before.len() >= 2,
        "the live run never created its namespaces"
    );
    // A leftover of an ended run: a namespace named for a PID no process has.
    let dead_pid = 4_000_000 + std::process::id() % 100_000;
    let leftover = format!("pal{dead_pid}-leftover");
    // Made as the lab makes its namespaces (not `ip netns add`, which bind-mounts /run/netns
    // over itself and so hides the namespaces other runs mounted there), and left behind.
    let made = palisade_lab::netns::NetNs::create(&leftover).expect("a leftover namespace");
    std::mem::forget(made);
    let out = lab().arg("clean").output().expect("palisade-lab clean");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live_after = namespaces_of(pid);
    let leftover_after = namespaces_of(dead_pid);
    // Whatever the clean did, the live run goes on to its end and cleans up itself.
    let status = live.wait().expect("wait");
    assert!(
        before.iter().all(|n| live_after.contains(n)),
        "clean removed a live run's namespaces: before {before:?}, after {live_after:?}"
    );
    assert!(
        status.success(),
        "the live run failed after a clean ran beside it"
    );
    assert_eq!(
        leftover_after,
        Vec::<String>::new(),
        "clean left an ended run's namespace"
    );
}

#[test]
fn a_malformed_case_is_an_error_naming_the_field() {
    let dir = tempdir();
    fs::write(dir.join("case.yaml"), "name: bad\ncluster: []\nsteps:\n  - probes:\n      - connect: ICMP/80\n        expect: \"- x/a\\nx/a .\\n\"\n").expect("write");
    let out = lab().args(["run"]).arg(&dir).output().expect("run");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("connect"),
        "error should name the field: {text}"
    );
    let _ = fs::remove_dir_all(&dir);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-test-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("tempdir");
    dir
}
