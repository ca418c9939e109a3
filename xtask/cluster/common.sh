# Sourced by the cluster scripts: names, addresses and paths of `cargo xtask cluster`.
#
# The cluster: network namespace palk-node-<i> per node, each with a veth `eth0` into the
# namespace palk-fabric, which routes between the nodes (node i: 10.200.<i>.1/24, pods
# 10.244.<i>.0/24, no encapsulation, no NAT) and has no route anywhere else: a packet to any
# other address dies there. Nothing is added to the host namespace's routes or firewall.
# Node 1 also runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
# Every daemon of a node runs in the node's network namespace and a private mount namespace
# (a slave of the host's: nothing propagates back), with its own /run, /var/lib, /var/log,
# bpffs and copies of the sysctls the kubelet writes; all state lives under $W/node-<i>.
set -euo pipefail
# A cluster's name prefixes its namespaces and cgroups, so two (a developer's and the test
# suite's) never touch each other's.
C=${PALISADE_CLUSTER_NAME:-palk}
W=${PALISADE_CLUSTER_DIR:-/tmp/palisade-cluster-$C}
K=${PALISADE_KUBE_BIN:-$HOME/.cache/palisade-kube}   # kubelet, kube-proxy, ..., e2e.test, agnhost, pause
H=$(dirname "$(realpath "${BASH_SOURCE[0]}")")
FABRIC=$C-fabric
API_PORT=6443
# The API server as seen from the host's loopback (a socat forward into node 1's namespace).
HOST_API_PORT=${PALISADE_CLUSTER_API_PORT:-36443}
SERVICE_CIDR=10.96.0.0/12
CLUSTER_CIDR=10.244.0.0/16
netns_of() { echo "$C-node-$1"; }
# The cgroup every container of node $1 lives under (kubelet cgroupRoot), in every hierarchy.
cgroup_of() { echo "/$C-node-$1"; }
node_name() { echo "node-$1"; }
node_ip() { echo "10.200.$1.1"; }
fabric_ip() { echo "10.200.$1.254"; }
pod_cidr() { echo "10.244.$1.0/24"; }
API_IP=$(node_ip 1)
nodes_up() { # the node numbers with state in $W
  local d; for d in "$W"/node-*/; do [[ -d $d ]] && { d=${d%/}; echo "${d##*-}"; }; done | sort -n
}
inner_pid() { cat "$W/node-$1/inner.pid" 2>/dev/null; }
node_running() { local p; p=$(inner_pid "$1") && [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }
# Runs a command in node $1's network and mount namespaces, with its kubeconfig and tools.
node_exec() {
  local i=$1; shift
  local N=$W/node-$i
  node_running "$i" || { echo "node $i is not running (cargo xtask cluster up)" >&2; return 1; }
  KUBECONFIG=$W/admin.kubeconfig PATH=$K:$PATH CONTAINERD_ADDRESS=$N/containerd.sock CONTAINERD_NAMESPACE=k8s.io \
    nsenter -t "$(inner_pid "$i")" -m -n --wd="$PWD" -- "$@"
}
# What a failed wait needs to be understood after the cluster is gone (`cluster down` removes
# $W): every node's conditions and taints, the pods of namespace $1 described (events
# included), their logs (the previous container's too) and each kubelet's last lines.
diagnose() {
  local ns=$1 i p
  {
    echo "---- diagnosis (namespace $ns); disk: $(df -h --output=avail,pcent "$W" | tail -1)"
    node_exec 1 kubectl get nodes -o 'custom-columns=NODE:.metadata.name,CONDITIONS:.status.conditions[?(@.status=="True")].type,TAINTS:.spec.taints[*].key' || true
    node_exec 1 kubectl -n "$ns" get pods -o wide || true
    node_exec 1 kubectl -n "$ns" describe pods | tail -60 || true
    for p in $(node_exec 1 kubectl -n "$ns" get pods -o name 2>/dev/null); do
      echo "---- logs of $p"; node_exec 1 kubectl -n "$ns" logs "$p" --all-containers --tail=40 || true
      node_exec 1 kubectl -n "$ns" logs "$p" --all-containers --previous --tail=20 2>/dev/null || true
    done
    for i in $(nodes_up); do echo "---- kubelet of $(node_name "$i")"; tail -25 "$W/node-$i/log/kubelet.log" || true; done
  } >&2
}
