#!/usr/bin/env bash
# v1.20.2's upstream NetworkPolicy e2e specs (test/e2e/network/network_policy.go) against the
# running cluster. SCTP specs are skipped only when this kernel has no SCTP (said in the
# summary). Results: OUT/{e2e.log,summary.txt,junit_*.xml}. Usage: e2e.sh NODES OUT
source "$(dirname "$(realpath "$0")")/common.sh"
NODES=$1; OUT=$(realpath -m "$2"); mkdir -p "$OUT"; rm -f "$OUT"/junit_*.xml
FOCUS='NetworkPolicy'
SKIP=''
if [[ ! -d /proc/sys/net/sctp ]] && ! grep -qw sctp /proc/net/protocols 2>/dev/null; then
  SKIP="SCTP"; SCTP="skipped: this kernel has no SCTP (no /proc/sys/net/sctp)"
else SCTP="run"; fi
t0=$(date +%s)
set +e
# The specs mostly wait (pod starts, 8 s connect timeouts x 5 tries for a blocked client):
# ginkgo runs them in parallel processes.
cd "$K"
node_exec 1 "$K/ginkgo" -nodes="${E2E_PARALLEL:-6}" -noColor "$K/e2e.test" -- \
  --provider=skeleton --kubeconfig="$W/admin.kubeconfig" \
  --ginkgo.focus="$FOCUS" --ginkgo.skip="$SKIP" --ginkgo.noColor \
  --report-dir="$OUT" --disable-log-dump --dump-logs-on-failure=false \
  --repo-root="$K/src/kubernetes-1.20.2" --kubectl-path="$K/kubectl" --num-nodes="$NODES" \
  > "$OUT/e2e.log" 2>&1
rc=$?
{
  echo "nodes=$NODES exit=$rc wall=$(( $(date +%s) - t0 ))s focus=$FOCUS skip=$SKIP"
  echo "SCTP: $SCTP"
  echo "command: cargo xtask e2e --nodes $NODES"
  grep -E '^(Ran [0-9]+ of|FAIL!|SUCCESS!)' "$OUT/e2e.log" | tail -3
  echo "specs (from the JUnit reports; result, seconds, name):"
  python3 - "$OUT" <<'P'
import glob, sys, xml.etree.ElementTree as ET
rows = []
for f in sorted(glob.glob(sys.argv[1] + "/junit_*.xml")):
    for case in ET.parse(f).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        result = "FAIL" if case.find("failure") is not None or case.find("error") is not None else "pass"
        rows.append((case.get("name"), result, float(case.get("time") or 0)))
for name, result, t in sorted(rows):
    print(f"  {result:4} {t:6.1f}  {name}")
P
} | tee "$OUT/summary.txt"
exit $rc
