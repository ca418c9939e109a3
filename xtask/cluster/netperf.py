#!/usr/bin/env python3
"""netperf between two real pods of the running cluster (`cargo xtask cluster netperf`).

Two pods on node 1 (agnhost pause containers: the pods' network namespaces, veths and routes
are the CNI's), netserver in the server pod pinned to CPU 0, netperf in the client pod pinned
to CPU 1 (Debian's netperf, run in each pod's network namespace with nsenter). The client
reaches the server's pod address.

Configurations, measured in alternation so that the machine's drift hits both alike:
  floor           Palisade uninstalled (manifests/uninstall/: no program on any interface)
  Palisade, 1     the DaemonSet from manifests/, one NetworkPolicy admitting the client
  Palisade, 10000 the same with 9,999 more NetworkPolicies selecting the server (other peers,
                  ports and CIDRs; the admitting one stays), so the server's maps hold them all
Each phase (1, then 10000 policies) runs ROUNDS rounds; a round measures the floor and
Palisade, in ABBA order (the first of each round alternates), every test RUNS times a round.
Palisade's figure is the geometric mean of the per-round ratios to the floor (the runs of a
round paired by position), with the 95% t-interval of their logarithms.

Usage: netperf.py REF MANIFESTS OUT.md [ROUNDS] [RUNS]   (the cluster up, Palisade deployed)
"""

import json
import math
import os
import statistics
import subprocess
import sys
import time

H = os.path.dirname(os.path.realpath(__file__))
TESTS = ["TCP_RR", "TCP_CRR", "TCP_STREAM", "UDP_RR"]
DATA_PORT = 12866
# t quantiles (0.975) for small samples.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 14: 2.145, 15: 2.131, 19: 2.093, 23: 2.069, 29: 2.045}


def t975(df):
    keys = sorted(k for k in T975 if k <= df)
    return T975[keys[-1]] if keys else T975[1]


def sh(*args, input=None, check=True):
    out = subprocess.run(args, input=input, capture_output=True, text=True)
    if check and out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {out.stderr.strip()[-800:]}")
    return out.stdout


def kc(*args, input=None, check=True):
    return sh("bash", f"{H}/exec.sh", "1", "kubectl", *args, input=input, check=check)


def pod_pid(pod):
    cid = kc("-n", "nperf", "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].containerID}")
    cid = cid.replace("containerd://", "")
    for line in sh("bash", f"{H}/exec.sh", "1", "ctr", "-n", "k8s.io", "tasks", "ls").splitlines():
        parts = line.split()
        if parts and parts[0] == cid:
            return parts[1]
    sys.exit(f"no task for pod {pod}")


def netperf(pid, server_ip, test):
    length = "-3000" if test == "TCP_CRR" else "1"
    for _ in range(3):
        try:
            out = subprocess.run(
                ["nsenter", "-t", pid, "-n", "taskset", "-c", "1", "netperf", "-H", server_ip,
                 "-t", test, "-l", length, "-P", "0", "--", "-P", f",{DATA_PORT}",
                 "-o", "THROUGHPUT,ELAPSED_TIME"],
                capture_output=True, text=True, timeout=30)
            # A counted TCP_CRR run (-l -3000) reports transactions over its own elapsed time
            # (timed CRR runs end late: the lab benchmark's finding).
            value = float(out.stdout.strip().splitlines()[-1].split(",")[0])
            if value > 0:
                return value
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            pass
        time.sleep(0.5)
    sys.exit(f"netperf {test} failed 3 times (is the path blocked?)")


POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: nperf, labels: {{app: {name}}}}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: k8s.gcr.io/e2e-test-images/agnhost:2.21, args: [pause]}}]
"""


def admitting():
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "admit-client", "namespace": "nperf"},
            "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}}


def filler(i):
    """A policy selecting the server whose rules admit other peers: pods, namespaces, both,
    CIDRs with an exception, on ports and port ranges (the lab benchmark's mix)."""
    kind = i % 4
    if kind == 0:
        peer = {"podSelector": {"matchLabels": {"app": f"peer-{i}"}}}
    elif kind == 1:
        peer = {"namespaceSelector": {"matchLabels": {"team": f"t{i % 100}"}}}
    elif kind == 2:
        peer = {"namespaceSelector": {"matchLabels": {"team": f"t{i % 100}"}},
                "podSelector": {"matchLabels": {"tier": f"x{i}"}}}
    else:
        a, b = (i // 256) % 256, i % 256
        peer = {"ipBlock": {"cidr": f"10.{100 + a % 100}.{b}.0/24", "except": [f"10.{100 + a % 100}.{b}.128/25"]}}
    # (No endPort: v1.20's API has none.)
    port = {"protocol": "TCP" if i % 2 else "UDP", "port": 1000 + i % 5000}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"filler-{i}", "namespace": "nperf"},
            "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [peer], "ports": [port]}]}}


def apply_list(items):
    for start in range(0, len(items), 500):
        doc = {"apiVersion": "v1", "kind": "List", "items": items[start:start + 500]}
        kc("apply", "-f", "-", input=json.dumps(doc))


def state(deployed, ref, manifests):
    if deployed:
        sh("bash", f"{H}/deploy.sh", ref, manifests)
    else:
        sh("bash", f"{H}/deploy.sh", "--delete", manifests)


def main():
    ref, manifests, out = sys.argv[1], sys.argv[2], sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    started = time.time()
    kc("create", "namespace", "nperf", check=False)
    kc("apply", "-f", "-", input=POD.format(name="server") + "---\n" + POD.format(name="client"))
    kc("-n", "nperf", "wait", "--for=condition=Ready", "pod/server", "pod/client", "--timeout=120s")
    server_ip = kc("-n", "nperf", "get", "pod", "server", "-o", "jsonpath={.status.podIP}").strip()
    spid, cpid = pod_pid("server"), pod_pid("client")
    netserver = subprocess.Popen(["nsenter", "-t", spid, "-n", "taskset", "-c", "0", "netserver", "-D", "-4"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    apply_list([admitting()])
    results = {}  # (phase, config, test) -> [values]
    pairs = {}  # (phase, test) -> [ratio per paired run]
    deployed = True
    try:
        for phase in (1, 10000):
            if phase == 10000:
                t = time.time()
                apply_list([filler(i) for i in range(1, 10000)])
                print(f"[netperf] 9,999 more policies applied in {time.time() - t:.0f} s", flush=True)
            for r in range(rounds):
                order = [False, True] if r % 2 == 0 else [True, False]
                per = {}
                for palisade in order:
                    if palisade != deployed:
                        state(palisade, ref, manifests)
                        deployed = palisade
                        time.sleep(3)
                    name = f"Palisade, {phase} " + ("policy" if phase == 1 else "policies") if palisade else "floor"
                    for test in TESTS:
                        vals = [netperf(cpid, server_ip, test) for _ in range(runs)]
                        results.setdefault((phase, name, test), []).extend(vals)
                        per[(palisade, test)] = vals
                    print(f"[netperf] phase {phase} round {r + 1}: {name}: "
                          + ", ".join(f"{t} {statistics.median(per[(palisade, t)]):.0f}" for t in TESTS), flush=True)
                for test in TESTS:
                    for p, f in zip(per[(True, test)], per[(False, test)]):
                        pairs.setdefault((phase, test), []).append(p / f)
    finally:
        netserver.kill()
        if not deployed:
            state(True, ref, manifests)
        kc("delete", "namespace", "nperf", "--wait=false", check=False)
    lines = [f"Cluster netperf, {rounds} rounds x {runs} runs per test and configuration, "
             f"{time.time() - started:.0f} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    for test in TESTS:
        unit = "10^6bits/s" if test == "TCP_STREAM" else "Trans/s"
        lines += [f"#### {test} ({unit})", "",
                  "| configuration | median | min .. max | ratio to floor (geometric mean of pairs) | 95% CI | pairs |",
                  "|---|---|---|---|---|---|"]
        for phase in (1, 10000):
            for (ph, name, t), vals in results.items():
                if ph != phase or t != test:
                    continue
                row = f"| {name} ({phase} polic{'y' if phase == 1 else 'ies'} in the API) " if name == "floor" else f"| {name} "
                row += f"| {statistics.median(vals):.0f} | {min(vals):.0f} .. {max(vals):.0f} "
                if name == "floor":
                    row += "| | | |"
                else:
                    logs = [math.log(x) for x in pairs[(phase, test)]]
                    m = statistics.mean(logs)
                    half = t975(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
                    row += f"| {math.exp(m):.3f} | {math.exp(m - half):.3f} .. {math.exp(m + half):.3f} | {len(logs)} |"
                lines.append(row)
        lines.append("")
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
