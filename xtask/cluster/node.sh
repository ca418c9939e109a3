#!/usr/bin/env bash
# One node's daemons. Runs inside the node's network namespace and a private (slave) mount
# namespace, started by up.sh; every daemon is its child. Usage: node.sh I NODES
source "$(dirname "$(realpath "$0")")/common.sh"
I=$1; N=$W/node-$I; P=$W/pki; L=$N/log; NAME=$(node_name "$I"); IP=$(node_ip "$I")
echo $$ > "$N/inner.pid"
# Mounts made here stay here (a slave of the host's); shared among themselves so that
# Bidirectional mount propagation (the agent's bpffs; runc wants a shared source) works.
mount --make-rshared /
# What the kubelet, containerd, runc and the CNI plugins keep under /run, /var/lib and /var/log
# (shim sockets, netns mounts, CNI cache, /var/log/pods) lands in the node's own places.
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/palisade
mount --bind "$N/varlib" /var/lib
mount --bind "$N/varlog" /var/log
# A bpffs of the node's own: the agent pins there, as on a real node.
mount -t bpf bpf /sys/fs/bpf
# The kubelet sets kernel-wide sysctls (kernel.panic=10, vm.overcommit_memory=1, ...): it
# writes private copies, so the host's values never change.
for k in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
  f=$N/sysctl/${k//\//_}; cat "/proc/sys/$k" > "$f"; mount --bind "$f" "/proc/sys/$k"
done
# The node's own cgroup (kubelet cgroupRoot): its containers go there, not beside another
# cluster's (down.sh empties and removes it).
for h in /sys/fs/cgroup/*/; do
  [[ -e $h/cgroup.procs ]] && mkdir -p "$h$(cgroup_of "$I")"
done
# Each daemon supervised as systemd would (Restart=always, 2 s apart); TERM to its supervisor
# stops both (down.sh).
start() {
  local name=$1; shift
  (
    child=
    trap '[[ -n $child ]] && kill "$child" 2>/dev/null; exit 0' TERM
    while :; do
      "$@" >> "$L/$name.log" 2>&1 &
      child=$!
      wait "$child"
      echo "$(date -u +%FT%TZ) $name exited ($?); restarting in 2 s" | tee -a "$L/$name.log"
      sleep 2
    done
  ) &
  echo $! > "$N/$name.pid"
}
if (( I == 1 )); then
  start etcd etcd --name palk --data-dir "$W/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster palk=http://127.0.0.1:2380 \
    --listen-metrics-urls http://127.0.0.1:2381
  start apiserver "$K/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port=$API_PORT --advertise-address="$IP" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
    --token-auth-file="$P/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$P/sa.pub" \
    --service-account-signing-key-file="$P/sa.key" --service-cluster-ip-range=$SERVICE_CIDR \
    --allow-privileged=true --kubelet-preferred-address-types=InternalIP --cert-dir="$N/apiserver-certs"
  for _ in $(seq 1 120); do curl -sf --cacert "$P/ca.crt" "https://127.0.0.1:$API_PORT/readyz" >/dev/null && break; sleep 0.5; done
  echo "apiserver ready $(date +%s.%N)"
  # --use-service-account-credentials: with its own user it may not patch nodes (taints stay).
  # Pod ranges are the CNI's, fixed per node (10.244.<i>.0/24), so nodes get no podCIDR.
  start kcm "$K/kube-controller-manager" --kubeconfig="$W/kubeconfigs/kcm" --leader-elect=false \
    --bind-address=127.0.0.1 --allocate-node-cidrs=false --cluster-cidr=$CLUSTER_CIDR \
    --service-cluster-ip-range=$SERVICE_CIDR --service-account-private-key-file="$P/sa.key" \
    --root-ca-file="$P/ca.crt" --use-service-account-credentials=true \
    --controllers='*,-csrsigning,-csrapproving,-csrcleaner'
  start scheduler "$K/kube-scheduler" --kubeconfig="$W/kubeconfigs/scheduler" --leader-elect=false \
    --bind-address=127.0.0.1 --port=0
fi
start containerd containerd --config "$N/containerd.toml"
for _ in $(seq 1 60); do [[ -S $N/containerd.sock ]] && break; sleep 0.5; done
# The fixed images, and Palisade's only as deployed (deploy.sh and restarts.sh import the
# ones they roll out): every build leaves its own tar in $W/img, and importing them all (6 s
# each) once kept a node from being Ready within up.sh's two minutes.
images=("$W/img/pause.tar" "$W/img/agnhost.tar")
if [[ -f $W/overlay/image ]]; then
  ref=$(cat "$W/overlay/image"); images+=("$W/img/palisade-${ref//[^a-zA-Z0-9]/_}.tar")
fi
for t in "${images[@]}"; do
  [[ -f $t ]] || continue
  ctr -a "$N/containerd.sock" -n k8s.io images import "$t" >> "$L/import.log" 2>&1 || echo "import $t failed" >> "$L/import.log"
done
start kubelet "$K/kubelet" --config="$N/kubelet.yaml" --kubeconfig="$W/kubeconfigs/$NAME" \
  --container-runtime=remote --container-runtime-endpoint="unix://$N/containerd.sock" \
  --root-dir="$N/kubelet" --cert-dir="$N/kubelet/pki" --hostname-override="$NAME" --node-ip="$IP" \
  --pod-infra-container-image=k8s.gcr.io/pause:3.2 --v=1
start kube-proxy "$K/kube-proxy" --config="$N/kube-proxy.yaml" --v=1
touch "$N/up"
echo "all started $(date +%s.%N)"
wait
