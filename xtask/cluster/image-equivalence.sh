#!/usr/bin/env bash
# Shows that images.sh's Palisade image has the contents the Dockerfile's runtime stage would
# give, where no Docker engine or registry is available. The Dockerfile's runtime stage is
#   FROM debian:bookworm-slim
#   RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
#   COPY palisade /usr/local/bin/palisade
# debian:bookworm-slim is Debian's own `debootstrap --variant=minbase bookworm`, slimmed
# (documentation, man pages and locales removed; debuerreotype). This script makes that base,
# runs the stage's RUN in it (chroot) and its COPY, and compares the result with the rootfs
# images.sh packs (minbase with ca-certificates included at debootstrap time): the same
# packages at the same versions, and the same files but for logs and package-manager caches.
# Usage: image-equivalence.sh BINARY
source "$(dirname "$(realpath "$0")")/common.sh"
BIN=$1
BASE=$K/rootfs-bookworm
[[ -f $BASE/.complete ]] || { echo "no $BASE: run images.sh first" >&2; exit 1; }
T=$(mktemp -d); trap 'umount "$T/slim/proc" 2>/dev/null; rm -rf "$T"' EXIT
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
debootstrap --variant=minbase bookworm "$T/slim" "$MIRROR" > "$T/debootstrap.log" 2>&1 || { tail "$T/debootstrap.log"; exit 1; }
rm -rf "$T"/slim/var/cache/apt/archives/*.deb "$T"/slim/var/lib/apt/lists/* "$T"/slim/usr/share/doc/* \
       "$T"/slim/usr/share/man/* "$T"/slim/usr/share/locale/*
# The Dockerfile's RUN and COPY.
cp /etc/resolv.conf "$T/slim/etc/resolv.conf"
mount -t proc proc "$T/slim/proc"
chroot "$T/slim" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*'
umount "$T/slim/proc"
install -m 0755 "$BIN" "$T/slim/usr/local/bin/palisade"
mkdir -p "$T/ours"; cp -a "$BASE/." "$T/ours/"; rm -f "$T/ours/.complete"
install -m 0755 "$BIN" "$T/ours/usr/local/bin/palisade"
pkgs() { chroot "$1" dpkg-query -W -f '${Package} ${Version}\n' | sort; }
files() { (cd "$1" && find . -path ./proc -prune -o -print | grep -vE '^\./(var/log|var/cache|var/lib/apt|etc/resolv.conf|usr/share/(doc|man|locale))(/|$)|-old$|\.log$|/ld\.so\.cache$|/debconf/.*\.dat$' | sort); }
if diff <(pkgs "$T/slim") <(pkgs "$T/ours") > "$T/pkgs.diff"; then
  echo "packages: the same $(pkgs "$T/ours" | wc -l) packages at the same versions"
else echo "packages differ:"; cat "$T/pkgs.diff"; fail=1; fi
if diff <(files "$T/slim") <(files "$T/ours") > "$T/files.diff"; then
  echo "files: the same $(files "$T/ours" | wc -l) paths (logs and package caches aside)"
else echo "paths differ:"; head -40 "$T/files.diff"; fail=1; fi
cmp -s "$T/slim/usr/local/bin/palisade" "$T/ours/usr/local/bin/palisade" && echo "binary: identical"
exit ${fail:-0}
