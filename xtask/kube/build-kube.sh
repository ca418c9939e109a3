#!/usr/bin/env bash
# Builds Kubernetes v1.20.2 binaries from Debian bookworm's own source package of `kubernetes` (the
# full upstream tree, vendor/ included), with Debian's Go.
#
# Usage: build-kube.sh [OUT_DIR] [BINARY...]   (default OUT_DIR ~/.cache/palisade-kube)
#   default binaries: kube-apiserver kube-controller-manager kubectl (the API-server tests'; ~9 min
#   on 2 cores). The real node (`cargo xtask cluster`) adds kubelet kube-proxy kube-scheduler
#   e2e.test ginkgo agnhost pause.
#
# Idempotent: builds exactly the binaries missing from OUT_DIR (in one `make` run), keeps the rest.
# The unpacked tree and the Go cache stay in OUT_DIR/src and OUT_DIR/gocache, so a later build of
# other binaries is incremental (and e2e.test gets its --repo-root).
set -euo pipefail
OUT=${1:-$HOME/.cache/palisade-kube}; shift || true
ALL=("$@"); (( ${#ALL[@]} )) || ALL=(kube-apiserver kube-controller-manager kubectl)
WANT=()
for b in "${ALL[@]}"; do
  [[ -x $OUT/$b ]] || WANT+=("$b")
done
if (( ${#WANT[@]} == 0 )); then echo "cached: $OUT"; exit 0; fi
echo "building ${WANT[*]} into $OUT"
mkdir -p "$OUT"
export DEBIAN_FRONTEND=noninteractive
if ! command -v go >/dev/null || [[ ! -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] \
   || ! command -v rsync >/dev/null || ! command -v etcd >/dev/null; then
  apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends golang-go rsync make openssl curl etcd-server etcd-client \
    golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >/dev/null
fi
SRC=$OUT/src; T=$SRC/kubernetes-1.20.2
if [[ ! -f $T/.palisade-ready ]]; then
  rm -rf "$SRC"; mkdir -p "$SRC"
  # A private apt configuration with source entries derived from the system's own sources file,
  # so the system's configuration is left untouched.
  A=$SRC/apt; mkdir -p "$A/parts" "$A/lists/partial"
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$A/parts/src.sources"
  APTO=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$A/parts" -o Dir::State::Lists="$A/lists")
  apt-get "${APTO[@]}" update -qq
  (cd "$SRC" && apt-get "${APTO[@]}" source --download-only kubernetes=1.20.5+really1.20.2-1.1+deb12u1)
  tar -C "$SRC" -xzf "$SRC/kubernetes_1.20.5+really1.20.2.orig.tar.gz"
  rm -f "$SRC"/kubernetes_*
  # The vendored reflect2 1.0.1 panics under Go >= 1.18 (nil dereference on every PATCH request);
  # Debian's reflect2 1.0.2 / json-iterator 1.1.12 are API compatible.
  for d in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rsync -a --delete --exclude '*_test.go' "/usr/share/gocode/src/$d/" "$T/vendor/$d/"
  done
  touch "$T/.palisade-ready"
fi
cd "$T"
export CGO_ENABLED=0 GOCACHE=$OUT/gocache KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 \
       KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
MAKE=(); EXTRA=()
for b in "${WANT[@]}"; do
  case $b in
    e2e.test) MAKE+=(test/e2e/e2e.test) ;;
    ginkgo|agnhost|pause) EXTRA+=("$b") ;;
    *) MAKE+=("cmd/$b") ;;
  esac
done
install_bin() { # Copy then rename, so an interrupted copy never looks like a cached binary.
  cp "$1" "$OUT/.$2.tmp"; mv "$OUT/.$2.tmp" "$OUT/$2"
}
if (( ${#MAKE[@]} )); then
  make WHAT="${MAKE[*]}"
  for m in "${MAKE[@]}"; do b=${m##*/}; install_bin "_output/bin/$b" "$b"; done
fi
# agnhost and ginkgo build in GOPATH mode from the tree's vendor/ (the tree's go.mod is not tidy
# for Go 1.19's module mode; the tree's own build uses GO111MODULE=off with _output/local/go).
gopath_build() { # PACKAGE NAME
  local g=$T/_output/local/go
  [[ -e $g/src/k8s.io/kubernetes ]] || { mkdir -p "$g/src/k8s.io"; ln -sfn "$T" "$g/src/k8s.io/kubernetes"; }
  (cd "$g/src/k8s.io/kubernetes" && GO111MODULE=off GOPATH=$g go build -ldflags '-s -w' -o "$OUT/.$2.tmp" "$1")
  mv "$OUT/.$2.tmp" "$OUT/$2"
}
for b in "${EXTRA[@]}"; do
  case $b in
    ginkgo) gopath_build ./vendor/github.com/onsi/ginkgo/ginkgo ginkgo ;;
    agnhost) gopath_build ./test/images/agnhost agnhost ;;
    # kubelet 1.20's default sandbox image (k8s.gcr.io/pause:3.2): a static C program.
    pause) gcc -Os -Wall -Werror -static -DVERSION=v3.2-0 -o "$OUT/.pause.tmp" build/pause/linux/pause.c
           strip "$OUT/.pause.tmp"; mv "$OUT/.pause.tmp" "$OUT/pause" ;;
  esac
done
for b in "${WANT[@]}"; do
  case $b in
    kubectl) "$OUT/$b" version --client ;;
    e2e.test|ginkgo|agnhost|pause) ls -la "$OUT/$b" ;;
    *) "$OUT/$b" --version ;;
  esac
done
