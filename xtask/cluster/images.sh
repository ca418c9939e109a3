#!/usr/bin/env bash
# Makes the node's images as docker-archive tars in $W/img, without a registry or a daemon:
#   k8s.gcr.io/pause:3.2                      kubelet 1.20's sandbox image (build/pause, static C)
#   k8s.gcr.io/e2e-test-images/agnhost:2.21   the name v1.20.2's e2e suite asks for
#                                             (test/utils/image/manifest.go), with busybox as
#                                             /bin/sh, seq, nc for its client pods' loops
#   REF (the third argument)                  Palisade: the Dockerfile's runtime stage, i.e.
#                                             Debian bookworm minbase + ca-certificates (made
#                                             by debootstrap, cached) + BINARY
# Usage: images.sh BINARY REF
source "$(dirname "$(realpath "$0")")/common.sh"
BIN=$1; REF=$2
I=$W/img; mkdir -p "$I"
if [[ ! -f $I/pause.tar ]]; then
  R=$(mktemp -d); install -m 0755 "$K/pause" "$R/pause"
  "$H/mkimage.sh" "$I/pause.tar" k8s.gcr.io/pause:3.2 "$R" '["/pause"]'; rm -rf "$R"
fi
if [[ ! -f $I/agnhost.tar ]]; then
  R=$(mktemp -d); mkdir -p "$R"/{bin,etc,tmp,uploads}
  install -m 0755 "$K/agnhost" "$R/agnhost"; ln -s agnhost "$R/agnhost-2"
  cp /bin/busybox "$R/bin/"
  for a in $(/bin/busybox --list); do [[ -e $R/bin/$a ]] || ln -s busybox "$R/bin/$a"; done
  cp "$K/src/kubernetes-1.20.2/test/images/agnhost/porter/localhost.crt" "$K/src/kubernetes-1.20.2/test/images/agnhost/porter/localhost.key" "$R/"
  chmod 1777 "$R/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$R/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
  "$H/mkimage.sh" "$I/agnhost.tar" k8s.gcr.io/e2e-test-images/agnhost:2.21 "$R" '["/agnhost"]' '["pause"]'
  rm -rf "$R"
fi
# The base: what `FROM debian:bookworm-slim` + `apt-get install ca-certificates` gives, made
# from Debian's archive by debootstrap (cached beside the Kubernetes binaries).
BASE=$K/rootfs-bookworm
if [[ ! -f $BASE/.complete ]]; then
  rm -rf "$BASE"
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  debootstrap --variant=minbase --include=ca-certificates bookworm "$BASE" "$MIRROR" > "$K/debootstrap.log" 2>&1 \
    || { tail -20 "$K/debootstrap.log"; exit 1; }
  # As the slim image: no apt lists, no docs, man pages or locales.
  rm -rf "$BASE"/var/cache/apt/archives/*.deb "$BASE"/var/lib/apt/lists/* "$BASE"/usr/share/doc/* \
         "$BASE"/usr/share/man/* "$BASE"/usr/share/locale/*
  touch "$BASE/.complete"
fi
R=$(mktemp -d); trap 'rm -rf "$R"' EXIT
cp -a "$BASE/." "$R/"; rm -f "$R/.complete"
install -m 0755 "$BIN" "$R/usr/local/bin/palisade"
name=${REF//[^a-zA-Z0-9]/_}
"$H/mkimage.sh" "$I/palisade-$name.tar" "$REF" "$R" '["/usr/local/bin/palisade"]'
# Each build's image has a tar of its own (about 360 MB): the four newest stay (this one, and
# a rollout's other image among them), the rest go.
ls -t "$I"/palisade-*.tar | tail -n +5 | while read -r old; do rm -f "$old"; done
