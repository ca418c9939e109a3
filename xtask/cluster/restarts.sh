#!/usr/bin/env bash
# Flows across agent disruptions on the real cluster. Needs the smoke test's pods and the
# quick-start's policies (trusted-client may reach nginx, client may not). For each MODE:
#   restart   kubectl delete pod of every agent (the DaemonSet makes new ones)
#   rollout   the DaemonSet rolled to another image ($ROLL_IMAGE, loaded on every node)
#   recreate  the DaemonSet deleted (its pods gone), then kubectl apply -k again
# a TCP and a UDP flow from trusted-client to nginx's ClusterIP (a numbered message every
# 20 ms, each echoed) run through it, and client tries a new connection and a datagram every
# 100 ms. Prints a JSON line per mode; exits non-zero when a flow lost anything or the denied
# peer got anything through. Usage: restarts.sh MODE... (SECONDS=flow duration, default 25)
source "$(dirname "$(realpath "$0")")/common.sh"
source "$H/pods.sh"
SECONDS_FLOW=${SECONDS_FLOW:-25}
CIP=$(kc -n default get svc nginx -o jsonpath='{.spec.clusterIP}')
PY=$(command -v python3)
# nsenter execs the program (no fork for a network namespace): $! is the server itself.
nsenter -t "$(pod_pid default nginx)" -n -- "$PY" "$H/flows.py" server 9000 9001 > /dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 1
fail=0
for mode in "$@"; do
  out=$(mktemp -d)
  in_pod default trusted-client "$PY" "$H/flows.py" client "$CIP" 9000 9001 "$SECONDS_FLOW" > "$out/client" 2>&1 &
  c=$!
  in_pod default client "$PY" "$H/flows.py" intruder "$CIP" 9000 9001 "$SECONDS_FLOW" > "$out/intruder" 2>&1 &
  x=$!
  sleep 3
  t0=$(date +%s.%N)
  case $mode in
    restart) kc -n palisade-system delete pod -l app.kubernetes.io/name=palisade --wait=false >/dev/null ;;
    rollout) [[ -n ${ROLL_IMAGE:-} ]] || { echo "rollout needs ROLL_IMAGE" >&2; exit 2; }
             for i in $(nodes_up); do
               node_exec "$i" ctr images import "$W/img/palisade-${ROLL_IMAGE//[^a-zA-Z0-9]/_}.tar" >/dev/null
             done
             kc -n palisade-system set image ds/palisade-agent "agent=$ROLL_IMAGE" >/dev/null ;;
    recreate) kc -n palisade-system delete ds palisade-agent --wait=true >/dev/null
              kc -n palisade-system wait --for=delete pod -l app.kubernetes.io/name=palisade --timeout=120s >/dev/null 2>&1 || true
              sleep 2
              kc apply -k "$W/overlay" >/dev/null ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  sleep 2
  kc -n palisade-system rollout status ds/palisade-agent --timeout=120s >/dev/null \
    || { diagnose palisade-system; exit 1; }
  ready=$(echo "$(date +%s.%N) - $t0" | bc)
  # A flow that ended in error still printed its result: judged below, not by set -e.
  wait $c || true; wait $x || true
  python3 - "$mode" "$ready" "$out/client" "$out/intruder" <<'P' || fail=1
import json, sys
mode, ready, cf, xf = sys.argv[1:]
try:
    c = json.load(open(cf)); x = json.load(open(xf))
except Exception as e:
    print(f"FAIL {mode}: no result ({e}): {open(cf).read()[-300:]} {open(xf).read()[-300:]}"); sys.exit(1)
bad = []
if c["tcp_error"]: bad.append("tcp: " + c["tcp_error"])
if c["tcp_echoed"] != c["tcp_sent"]: bad.append("tcp echoes missing")
if c["tcp_retransmissions"]: bad.append("tcp retransmitted (a segment was dropped)")
if c["udp_lost"]: bad.append("udp datagrams lost")
if x["tcp_connected"] or x["udp_answered"]: bad.append("the denied peer got through")
rec = {"mode": mode, "agents_ready_after_s": round(float(ready), 1), "flows": c, "denied_peer": x}
print(("ok   " if not bad else "FAIL ") + json.dumps(rec) + ("" if not bad else "  <- " + "; ".join(bad)))
sys.exit(1 if bad else 0)
P
  rm -rf "$out"
done
exit $fail
