//! The agent's view of the node's interfaces (`palisade::daemon::links`) while someone else
//! changes the node's routes, as a CNI plugin does while pods start.
//!
//! Real kernel, a real network namespace; no programs.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use palisade::daemon::links::Links;
use palisade_integration::require_root;
use palisade_lab::netns::{NetNs, run_prefix};
use rtnetlink::{RouteMessageBuilder, packet_route::route::RouteScope};

/// How many times the agent's link and address requests are made afresh.
const ROUNDS: usize = 300;

/// A route change made by another process carries that process's request number. A fresh
/// netlink socket numbers its requests 1, 2, 3, ... as the agent's own does, so a churning
/// neighbour that opens a socket per change sends notifications numbered like the agent's
/// first requests; none of them may be taken for the answer to one (the agent once exited at
/// start-up with "listing addresses: unexpected message NewRoute").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_changes_by_others_never_answer_the_agents_requests() {
    require_root();
    let ns = NetNs::create(&format!("{}links", run_prefix())).expect("namespace");
    ns.run(|| {
        std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
    })
    .expect("entered the namespace")
    .expect("ip link set lo up");

    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, changes) = (Arc::clone(&stop), Arc::clone(&changes));
        let fd = ns.fd().expect("namespace descriptor");
        std::thread::spawn(move || {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut n: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    // A socket per pair of changes: their numbers are 1 and 2, again and again.
                    let (connection, handle, _) = rtnetlink::new_connection().expect("socket");
                    let task = tokio::spawn(connection);
                    let host = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 0)) + n % 200);
                    let route = || {
                        RouteMessageBuilder::<Ipv4Addr>::new()
                            .destination_prefix(host, 32)
                            .output_interface(1)
                            .scope(RouteScope::Link)
                            .build()
                    };
                    handle
                        .route()
                        .add(route())
                        .replace()
                        .execute()
                        .await
                        .expect("route add");
                    handle
                        .route()
                        .del(route())
                        .execute()
                        .await
                        .expect("route del");
                    task.abort();
                    changes.fetch_add(2, Ordering::Relaxed);
                    n = n.wrapping_add(1);
                }
            });
        })
    };

    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        // A fresh agent's sockets each round: its requests are numbered from 1 as well.
        let (tx, _changes) = tokio::sync::mpsc::unbounded_channel();
        let fd = ns.fd().expect("namespace descriptor");
        let links = Links::open(Some(&fd), vec!["pv".to_owned()], tx).expect("links");
        if let Err(e) = links.node_addrs().await {
            failures.push(format!("round {round}, node addresses: {e}"));
        }
        if let Err(e) = links.discover(&[]).await {
            failures.push(format!("round {round}, discovery: {e}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("the churning thread");
    let changes = changes.load(Ordering::Relaxed);
    assert!(
        changes > ROUNDS as u64,
        "the neighbour made only {changes} route changes over {ROUNDS} rounds: not a race"
    );
    assert!(
        failures.is_empty(),
        "{} of {ROUNDS} rounds failed while {changes} route changes were made:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
