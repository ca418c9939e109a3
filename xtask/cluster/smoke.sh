#!/usr/bin/env bash
# The real-node smoke test (`cargo xtask test`): on the running cluster with Palisade deployed,
# the quick-start (examples/quick-start: its policies as written) enforced for connections
# through the Service's ClusterIP (kube-proxy's DNAT), then the agent's pod deleted under a
# live TCP and UDP flow that the policy admits, while a denied peer keeps trying: nothing of
# the flows may be lost and nothing of the peer may pass. Exits non-zero on any mismatch.
# Usage: smoke.sh PROJECT_ROOT [MODE...]   (restarts.sh's modes; default: restart)
source "$(dirname "$(realpath "$0")")/common.sh"
source "$H/pods.sh"
ROOT=$(realpath "$1"); QS=$ROOT/examples/quick-start; shift
MODES=("$@"); (( ${#MODES[@]} )) || MODES=(restart)
fail=0
# With two nodes or more the server runs on the last and the clients on the first, so every
# probe and flow crosses nodes (and both agents judge it).
LAST=$(node_name "$(for i in $(nodes_up); do node_running "$i" && echo "$i"; done | tail -1)"); FIRST=$(node_name 1)
kc apply -f - <<Y >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: nginx, namespace: default, labels: {run: nginx}}
spec:
  nodeName: $LAST
  containers: [{name: web, image: k8s.gcr.io/e2e-test-images/agnhost:2.21, args: [netexec, --http-port=80, --udp-port=8081],
                ports: [{name: http, containerPort: 80, protocol: TCP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {run: client}}
spec: {nodeName: $FIRST, containers: [{name: c, image: k8s.gcr.io/e2e-test-images/agnhost:2.21, args: [pause]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: trusted-client, namespace: default, labels: {run: trusted-client, access: "true"}}
spec: {nodeName: $FIRST, containers: [{name: c, image: k8s.gcr.io/e2e-test-images/agnhost:2.21, args: [pause]}]}
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: default}
spec:
  selector: {run: nginx}
  ports: [{name: http, port: 80, protocol: TCP}, {name: flow-tcp, port: 9000, protocol: TCP}, {name: flow-udp, port: 9001, protocol: UDP}]
Y
kc -n default wait --for=condition=Ready pod/nginx pod/client pod/trusted-client --timeout=120s >/dev/null \
  || { diagnose default; exit 1; }
CIP=$(kc -n default get svc nginx -o jsonpath='{.spec.clusterIP}')
# expect STEP CLIENT TRUSTED: '.' connects, 'X' is blocked (through the ClusterIP, TCP/80).
expect() {
  local step=$1 got_c got_t
  # A policy takes a moment to reach the maps: poll for the expected table up to 10 s.
  for _ in $(seq 1 10); do
    got_c=X; can_connect default client "$CIP" 80 && got_c=.
    got_t=X; can_connect default trusted-client "$CIP" 80 && got_t=.
    [[ $got_c == "$2" && $got_t == "$3" ]] && break
    sleep 1
  done
  if [[ $got_c == "$2" && $got_t == "$3" ]]; then echo "ok   $step: client $got_c trusted-client $got_t"
  else echo "FAIL $step: client $got_c (want $2) trusted-client $got_t (want $3)"; fail=1; fi
}
expect "no policy" . .
kc apply -f "$QS/default-deny.yaml" >/dev/null
expect "default-deny" X X
kc apply -f "$QS/access-nginx.yaml" >/dev/null
expect "access-nginx" X .
# The agent restarted under live flows.
kc -n default get pods -o wide | awk '{print "  " $1, $7}'
bash "$H/restarts.sh" "${MODES[@]}" || fail=1
kc delete -f "$QS/default-deny.yaml" -f "$QS/access-nginx.yaml" >/dev/null
expect "policies deleted" . .
kc -n default delete pod nginx client trusted-client --wait=false >/dev/null
kc -n default delete svc nginx >/dev/null
exit $fail
