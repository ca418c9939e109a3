#!/usr/bin/env bash
# Builds a real kube-apiserver + kube-controller-manager + kubectl (Kubernetes v1.20.2) from Debian
# bookworm's own source package of `kubernetes` (the full upstream tree, vendor/ included), with
# Debian's Go. ~9 min on 2 cores for the servers, a few more for kubectl.
# Usage: build-kube.sh [OUT_DIR]   (default ~/.cache/palisade-kube)
# Idempotent: builds exactly the binaries missing from OUT_DIR (in one `make` run), keeps the rest.
set -euo pipefail
OUT=${1:-$HOME/.cache/palisade-kube}
WANT=()
for b in kube-apiserver kube-controller-manager kubectl; do
  [[ -x $OUT/$b ]] || WANT+=("$b")
done
if (( ${#WANT[@]} == 0 )); then echo "cached: $OUT"; exit 0; fi
echo "building ${WANT[*]} into $OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends golang-go rsync make openssl curl etcd-server etcd-client \
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >/dev/null
# A private apt configuration with source entries derived from the system's own sources file,
# so the system's configuration is left untouched.
A=$WORK/apt; mkdir -p "$A/parts" "$A/lists/partial"
sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$A/parts/src.sources"
APTO=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$A/parts" -o Dir::State::Lists="$A/lists")
apt-get "${APTO[@]}" update -qq
cd "$WORK"
apt-get "${APTO[@]}" source --download-only kubernetes=1.20.5+really1.20.2-1.1+deb12u1
tar xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz
cd kubernetes-1.20.2
# The vendored reflect2 1.0.1 panics under Go >= 1.18 (nil dereference on every PATCH request);
# Debian's reflect2 1.0.2 / json-iterator 1.1.12 are API compatible.
for d in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rsync -a --delete --exclude '*_test.go' "/usr/share/gocode/src/$d/" "vendor/$d/"
done
export CGO_ENABLED=0 GOCACHE=$WORK/gocache KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 \
       KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
make WHAT="${WANT[*]/#/cmd/}"
mkdir -p "$OUT"
for b in "${WANT[@]}"; do
  # Copy then rename, so an interrupted copy never looks like a cached binary.
  cp "_output/bin/$b" "$OUT/.$b.tmp"
  mv "$OUT/.$b.tmp" "$OUT/$b"
  if [[ $b == kubectl ]]; then "$OUT/$b" version --client; else "$OUT/$b" --version; fi
done
