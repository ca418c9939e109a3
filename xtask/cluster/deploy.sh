#!/usr/bin/env bash
# Deploys Palisade from the project's manifests/ with `kubectl apply -k`, through an overlay
# that only renames the image to REF (loaded into every running node's containerd first), and
# waits for the rollout. `deploy.sh --delete` removes it the same way (kubectl delete -k).
# Usage: deploy.sh REF MANIFESTS_DIR | deploy.sh --delete MANIFESTS_DIR
source "$(dirname "$(realpath "$0")")/common.sh"
O=$W/overlay; mkdir -p "$O"
if [[ $1 == --delete ]]; then
  [[ -f $O/kustomization.yaml ]] || { echo "nothing deployed"; exit 0; }
  node_exec 1 kubectl delete -k "$O" --ignore-not-found --wait=true
  node_exec 1 kubectl -n palisade-system wait --for=delete pod -l app.kubernetes.io/name=palisade --timeout=120s 2>/dev/null || true
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
node_exec 1 kubectl apply -k "$O"
node_exec 1 kubectl -n palisade-system rollout status ds/palisade-agent --timeout=180s
printf 'Palisade (%s) rolled out on every node %.1f s after kubectl apply -k\n' "$REF" "$(echo "$(date +%s.%N) - $t0" | bc)"
