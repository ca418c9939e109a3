#!/usr/bin/env bash
# Stops every daemon and container of the cluster and removes its network namespaces. The
# state in $W stays (images, PKI, etcd) unless --purge; a second run does nothing.
source "$(dirname "$(realpath "$0")")/common.sh"
set +e
for i in $(nodes_up); do
  N=$W/node-$i
  if node_running "$i"; then
    MNT=$(readlink "/proc/$(inner_pid "$i")/ns/mnt")
    # The kubelet first, so it restarts nothing, then every container through containerd.
    for d in kubelet kube-proxy; do [[ -f $N/$d.pid ]] && kill "$(cat "$N/$d.pid")" 2>/dev/null; done
    sleep 1
    if [[ -S $N/containerd.sock ]]; then
      for t in $(node_exec "$i" ctr tasks ls -q 2>/dev/null); do node_exec "$i" ctr tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
      sleep 1
      for t in $(node_exec "$i" ctr tasks ls -q 2>/dev/null); do node_exec "$i" ctr tasks delete -f "$t" >/dev/null 2>&1; done
      for c in $(node_exec "$i" ctr containers ls -q 2>/dev/null); do node_exec "$i" ctr containers delete "$c" >/dev/null 2>&1; done
    fi
    for d in scheduler kcm apiserver etcd containerd; do [[ -f $N/$d.pid ]] && kill "$(cat "$N/$d.pid")" 2>/dev/null; done
    sleep 2
    # Whatever is left in the node's mount namespace (shims, pods' processes).
    for p in /proc/[0-9]*; do
      p=${p#/proc/}; [[ $p == "$$" || $p == "$(inner_pid "$i")" ]] && continue
      [[ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" == "$MNT" ]] && kill -9 "$p" 2>/dev/null
    done
    kill "$(inner_pid "$i")" 2>/dev/null; sleep 0.5; kill -9 "$(inner_pid "$i")" 2>/dev/null
  fi
  [[ -f $N/launcher.pid ]] && kill "$(cat "$N/launcher.pid")" 2>/dev/null
  rm -f "$N/up" "$N"/*.pid
  # Unmounted with the mount namespace; containerd's snapshots are plain directories now.
  ns=$(netns_of "$i"); ip netns list | grep -qw "$ns" && ip netns delete "$ns"
done
# Containers whose shim and containerd are gone (a crashed run) are still in the nodes'
# cgroups (kubelet cgroupRoot, this cluster's alone): killed, then the cgroups removed.
for i in $(nodes_up); do
  for h in /sys/fs/cgroup/*/; do
    c=$h${C}-node-$i
    [[ -d $c ]] || continue
    find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
    sleep 0.2
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
done
[[ -f $W/forward.pid ]] && { kill "$(cat "$W/forward.pid")" 2>/dev/null; rm -f "$W/forward.pid"; }
ip netns list | grep -qw "$FABRIC" && ip netns delete "$FABRIC"
if [[ ${1:-} == --purge ]]; then
  # Keep the images (slow to make), drop everything else.
  find "$W" -mindepth 1 -maxdepth 1 ! -name img -exec rm -rf {} + 2>/dev/null
fi
left=$(ip netns list | grep -E "^$C-" ; grep -F " $W/" /proc/mounts)
if [[ -n $left ]]; then echo "left behind: $left" >&2; exit 1; fi
echo "cluster down"
