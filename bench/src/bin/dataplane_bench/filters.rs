//! The same policies as netfilter rules in the node's namespace, where forwarded pod traffic
//! passes: iptables + ipset in the shape kube-router generates, and nftables sets and chains.
//!
//! kube-router's shape (pkg/controllers/netpol): `FORWARD` jumps to `KUBE-ROUTER-FORWARD`,
//! which sends traffic to a local pod into that pod's chain `KUBE-POD-FW-*`; the pod chain
//! accepts established and related flows first, drops invalid ones, then jumps to the chain
//! `KUBE-NWPLCY-*` of every policy selecting the pod, in order; a policy chain marks what one of
//! its rules allows (ipsets for the peers and the selected pods, `--dport` for ports) and
//! returns; a packet the pod chain finds unmarked is dropped. One difference: kube-router makes
//! a set per rule, we make one per distinct selector (the kernel here allows 256 sets per
//! namespace, `CONFIG_IP_SET_MAX`), which changes the memory, not the per-packet work.
//! iptables is the legacy (xtables) backend, so that the two configurations differ in the
//! classifier they run, not only in syntax.
//!
//! nftables: the same chains, sets as nft sets (interval sets for CIDRs), `accept` straight from
//! the policy chain (nft needs no mark to end the pod's evaluation).

use std::{
    fmt::Write as _,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::synth::Peer;
use crate::synth::{
    CLIENT, PolicySpec, Proto, SERVER, Scale, Target, cidrs, members, targets, used,
};

/// Which netfilter front end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Iptables,
    Nftables,
}

const NFT_TABLE: &str = "kube_np_bench";

/// Writes the rules for `specs` in the namespace at `netns`.
pub fn install(filter: Filter, netns: &Path, scale: &Scale, specs: &[PolicySpec]) -> Result<()> {
    match filter {
        Filter::Iptables => {
            run_stdin(netns, &["ipset", "restore"], &ipset_restore(scale, specs))?;
            run_stdin(
                netns,
                &["iptables-legacy-restore"],
                &iptables_restore(specs),
            )
        }
        Filter::Nftables => run_stdin(netns, &["nft", "-f", "-"], &nft_ruleset(scale, specs)),
    }
}

/// Removes what [`install`] wrote.
pub fn remove(filter: Filter, netns: &Path) -> Result<()> {
    match filter {
        Filter::Iptables => {
            let empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
            run_stdin(netns, &["iptables-legacy-restore"], empty)?;
            run_stdin(netns, &["ipset", "destroy"], "")
        }
        Filter::Nftables => run_stdin(
            netns,
            &["nft", "-f", "-"],
            &format!("delete table inet {NFT_TABLE}\n"),
        ),
    }
}

/// Runs `argv` inside the namespace with `input` on its stdin.
fn run_stdin(netns: &Path, argv: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {argv:?} (is it installed? `cargo xtask setup`)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("feeding {argv:?}"))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{argv:?} in {}: {}: {}",
            netns.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn set_name(peer: Peer) -> String {
    match peer {
        Peer::Pods { team, app } => format!("KUBE-SRC-POD-{team}-{app}"),
        Peer::Namespaces { team } => format!("KUBE-SRC-NS-{team}"),
        Peer::Tier { team, tier } => format!("KUBE-SRC-TIER-{team}-{tier}"),
        Peer::Cidrs { group } => format!("KUBE-SRC-CIDR-{group}"),
        Peer::Client => "KUBE-SRC-CLIENT".into(),
    }
}

fn target_set(target: Target) -> &'static str {
    match target {
        Target::All => "KUBE-DST-ALL",
        Target::App => "KUBE-DST-APP",
        Target::RoleIn => "KUBE-DST-ROLEIN",
        Target::Role => "KUBE-DST-ROLE",
    }
}

fn ipset_restore(scale: &Scale, specs: &[PolicySpec]) -> String {
    let (peers, targets_used) = used(specs);
    let mut out = String::new();
    for peer in peers {
        let name = set_name(peer);
        if let Peer::Cidrs { group } = peer {
            let _ = writeln!(
                out,
                "create {name} hash:net family inet hashsize 1024 maxelem 65536"
            );
            for (net, len) in cidrs(group) {
                let _ = writeln!(out, "add {name} {net}/{len}");
            }
        } else {
            let _ = writeln!(
                out,
                "create {name} hash:ip family inet hashsize 1024 maxelem 65536"
            );
            for ip in members(peer, scale) {
                let _ = writeln!(out, "add {name} {ip}");
            }
        }
    }
    for target in targets_used {
        let name = target_set(target);
        let _ = writeln!(
            out,
            "create {name} hash:ip family inet hashsize 1024 maxelem 65536"
        );
        for ip in targets(target, scale) {
            let _ = writeln!(out, "add {name} {ip}");
        }
    }
    out
}

/// The local pods that some policy selects, with the policies selecting each, in order.
fn pod_chains(specs: &[PolicySpec]) -> Vec<(&'static str, std::net::Ipv4Addr, Vec<usize>)> {
    let scale = Scale { peers: 0, extra: 0 };
    let selecting = |ip| {
        specs
            .iter()
            .filter(|s| targets(s.target, &scale).contains(&ip))
            .map(|s| s.index)
            .collect::<Vec<_>>()
    };
    [("SERVER", SERVER), ("CLIENT", CLIENT)]
        .into_iter()
        .map(|(name, ip)| (name, ip, selecting(ip)))
        .filter(|(_, _, policies)| !policies.is_empty())
        .collect()
}

const MARK: &str = "0x10000/0x10000";

fn iptables_restore(specs: &[PolicySpec]) -> String {
    let pods = pod_chains(specs);
    let mut out = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-ROUTER-FORWARD - [0:0]\n",
    );
    for (name, _, _) in &pods {
        let _ = writeln!(out, ":KUBE-POD-FW-{name} - [0:0]");
    }
    for spec in specs {
        let _ = writeln!(out, ":KUBE-NWPLCY-{} - [0:0]", spec.index);
    }
    out.push_str("-A FORWARD -m comment --comment \"kube-router netpol\" -j KUBE-ROUTER-FORWARD\n");
    for (name, ip, _) in &pods {
        let _ = writeln!(
            out,
            "-A KUBE-ROUTER-FORWARD -d {ip}/32 -j KUBE-POD-FW-{name}"
        );
    }
    for (name, ip, policies) in &pods {
        let chain = format!("KUBE-POD-FW-{name}");
        let _ = writeln!(
            out,
            "-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
        let _ = writeln!(out, "-A {chain} -m conntrack --ctstate INVALID -j DROP");
        for index in policies {
            let _ = writeln!(out, "-A {chain} -d {ip}/32 -j KUBE-NWPLCY-{index}");
        }
        let _ = writeln!(out, "-A {chain} -m mark ! --mark {MARK} -j DROP");
        let _ = writeln!(out, "-A {chain} -j MARK --set-xmark 0x0/0x10000");
        let _ = writeln!(out, "-A {chain} -j ACCEPT");
    }
    for spec in specs {
        let chain = format!("KUBE-NWPLCY-{}", spec.index);
        let dst = target_set(spec.target);
        for peer in &spec.peers {
            for port in &spec.ports {
                let proto = match port.proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                };
                let dport = if port.first == port.last {
                    port.first.to_string()
                } else {
                    format!("{}:{}", port.first, port.last)
                };
                let matches = format!(
                    "-m set --match-set {} src -m set --match-set {dst} dst -p {proto} --dport {dport}",
                    set_name(*peer)
                );
                let _ = writeln!(out, "-A {chain} {matches} -j MARK --set-xmark {MARK}");
                let _ = writeln!(out, "-A {chain} {matches} -m mark --mark {MARK} -j RETURN");
            }
        }
    }
    out.push_str("COMMIT\n");
    out
}

fn nft_set_name(peer: Peer) -> String {
    set_name(peer).to_lowercase().replace('-', "_")
}

fn nft_target_set(target: Target) -> String {
    target_set(target).to_lowercase().replace('-', "_")
}

fn nft_ruleset(scale: &Scale, specs: &[PolicySpec]) -> String {
    let (peers, targets_used) = used(specs);
    let mut out = format!("table inet {NFT_TABLE} {{\n");
    let mut set = |name: String, interval: bool, elements: Vec<String>| {
        let _ = writeln!(out, "  set {name} {{\n    type ipv4_addr;");
        if interval {
            out.push_str("    flags interval;\n");
        }
        if !elements.is_empty() {
            let _ = writeln!(out, "    elements = {{ {} }}", elements.join(", "));
        }
        out.push_str("  }\n");
    };
    for peer in peers {
        match peer {
            Peer::Cidrs { group } => set(
                nft_set_name(peer),
                true,
                cidrs(group).map(|(n, l)| format!("{n}/{l}")).collect(),
            ),
            _ => set(
                nft_set_name(peer),
                false,
                members(peer, scale)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
        }
    }
    for target in targets_used {
        set(
            nft_target_set(target),
            false,
            targets(target, scale)
                .iter()
                .map(ToString::to_string)
                .collect(),
        );
    }
    for spec in specs {
        let _ = writeln!(out, "  chain np_{} {{", spec.index);
        let dst = nft_target_set(spec.target);
        for peer in &spec.peers {
            for port in &spec.ports {
                let proto = match port.proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                };
                let dport = if port.first == port.last {
                    port.first.to_string()
                } else {
                    format!("{}-{}", port.first, port.last)
                };
                let _ = writeln!(
                    out,
                    "    ip saddr @{} ip daddr @{dst} {proto} dport {dport} accept",
                    nft_set_name(*peer)
                );
            }
        }
        out.push_str("  }\n");
    }
    let pods = pod_chains(specs);
    for (name, ip, policies) in &pods {
        let _ = writeln!(out, "  chain pod_{} {{", name.to_lowercase());
        out.push_str("    ct state established,related accept\n    ct state invalid drop\n");
        for index in policies {
            let _ = writeln!(out, "    ip daddr {ip} jump np_{index}");
        }
        out.push_str("    drop\n  }\n");
    }
    out.push_str(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n",
    );
    for (name, ip, _) in &pods {
        let _ = writeln!(out, "    ip daddr {ip} jump pod_{}", name.to_lowercase());
    }
    out.push_str("  }\n}\n");
    out
}
