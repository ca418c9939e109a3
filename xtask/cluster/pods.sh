# Sourced: helpers for pods of the running cluster.
# kc ARGS...: kubectl as the cluster's admin (inside node 1).
kc() { node_exec 1 kubectl "$@"; }
# pod_node NS POD: the node number the pod runs on.
pod_node() { local n; n=$(kc -n "$1" get pod "$2" -o jsonpath='{.spec.nodeName}'); echo "${n#node-}"; }
# pod_pid NS POD: the host PID of the pod's first container (its network namespace is the pod's).
pod_pid() {
  local cid i
  cid=$(kc -n "$1" get pod "$2" -o jsonpath='{.status.containerStatuses[0].containerID}'); cid=${cid#containerd://}
  i=$(pod_node "$1" "$2")
  node_exec "$i" ctr -n k8s.io tasks ls | awk -v c="$cid" '$1==c{print $2}'
}
# in_pod NS POD CMD...: a host command in the pod's network namespace.
in_pod() { local ns=$1 pod=$2 pid; shift 2; pid=$(pod_pid "$ns" "$pod"); [[ -n $pid ]] || { echo "no PID for $ns/$pod" >&2; return 1; }; nsenter -t "$pid" -n -- "$@"; }
# can_connect NS POD ADDR PORT: 0 when a TCP connection from the pod opens (agnhost connect).
can_connect() { kc -n "$1" exec "$2" -- /agnhost connect "$3:$4" --timeout=3s >/dev/null 2>&1; }
