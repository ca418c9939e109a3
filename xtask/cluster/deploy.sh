#!/usr/bin/env bash
# Deploys Palisade from the project's manifests/ with `kubectl apply -k`, through an overlay
# that only renames the image to REF (loaded into every running node's containerd first), and
# waits for the rollout. `deploy.sh --delete` removes it the same way (kubectl delete -k).
# Usage: deploy.sh REF MANIFESTS_DIR | deploy.sh --delete MANIFESTS_DIR
source "$(dirname "$(realpath "$0")")/common.sh"
O=$W/overlay; mkdir -p "$O"
if [[ $1 == --delete ]]; then
  # The documented uninstall path: the DaemonSet deleted, then manifests/uninstall/ (same image)
  # takes the pinned programs, links and maps off every node, then it is deleted too.
  [[ -f $O/kustomization.yaml ]] || { echo "nothing deployed"; exit 0; }
  U=$W/overlay-uninstall; mkdir -p "$U"
  IMG=$(awk '$1=="image:"{print $2; exit}' "$2/uninstall/daemonset.yaml"); IMG=${IMG%:*}
  REF=$(cat "$O/image")
  cat > "$U/kustomization.yaml" <<Y
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
bases: [$(realpath --relative-to="$U" "$2/uninstall")]
images: [{name: $IMG, newName: ${REF%:*}, newTag: ${REF##*:}}]
Y
  t0=$(date +%s.%N)
  node_exec 1 kubectl delete -k "$O" --ignore-not-found --wait=true >/dev/null
  node_exec 1 kubectl -n palisade-system wait --for=delete pod -l app.kubernetes.io/name=palisade --timeout=120s >/dev/null 2>&1 || true
  # A previous uninstall's namespace may still be terminating.
  node_exec 1 kubectl wait --for=delete namespace/palisade-uninstall --timeout=120s >/dev/null 2>&1 || true
  node_exec 1 kubectl apply -k "$U" >/dev/null
  node_exec 1 kubectl -n palisade-uninstall rollout status ds/palisade-uninstall --timeout=180s >/dev/null \
    || { diagnose palisade-uninstall; exit 1; }
  for i in $(nodes_up); do
    node_running "$i" || continue
    # What the uninstall pod said it removed, and proof nothing is left pinned on the node.
    pod=$(node_exec 1 kubectl -n palisade-uninstall get pods -o name --field-selector "spec.nodeName=$(node_name "$i")")
    node_exec 1 kubectl -n palisade-uninstall logs "$pod" -c uninstall --tail=3 | sed "s/^/  $(node_name "$i"): /"
    left=$(node_exec "$i" find /sys/fs/bpf/palisade -mindepth 1 2>/dev/null | head -5 || true)
    [[ -z $left ]] || { echo "$(node_name "$i"): still pinned after uninstall: $left" >&2; exit 1; }
  done
  node_exec 1 kubectl delete -k "$U" --wait=true >/dev/null
  rm -f "$O/kustomization.yaml" "$O/image"
  printf 'Palisade uninstalled from every node in %.1f s\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
  exit 0
fi
REF=$1; M=$(realpath "$2")
t0=$(date +%s.%N)
tar=$W/img/palisade-${REF//[^a-zA-Z0-9]/_}.tar
for i in $(nodes_up); do
  node_running "$i" && node_exec "$i" ctr images import "$tar" > /dev/null
done
IMG=$(awk '$1=="image:"{print $2; exit}' "$M/daemonset.yaml"); IMG=${IMG%:*}
# kubectl 1.20's kustomize (v2.0.3) takes a directory under `bases:` (newer ones too).
cat > "$O/kustomization.yaml" <<Y
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
bases: [$(realpath --relative-to="$O" "$M")]
images: [{name: $IMG, newName: ${REF%:*}, newTag: ${REF##*:}}]
Y
echo "$REF" > "$O/image"
node_exec 1 kubectl apply -k "$O"
node_exec 1 kubectl -n palisade-system rollout status ds/palisade-agent --timeout=180s \
  || { diagnose palisade-system; exit 1; }
printf 'Palisade (%s) rolled out on every node %.1f s after kubectl apply -k\n' "$REF" "$(echo "$(date +%s.%N) - $t0" | bc)"
