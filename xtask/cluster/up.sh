#!/usr/bin/env bash
# Starts (or resumes) the cluster with NODES nodes and waits until every node is Ready.
# Usage: up.sh NODES   (binaries in $K, images in $W/img/*.tar made by images.sh)
source "$(dirname "$(realpath "$0")")/common.sh"
NODES=${1:-2}
t0=$(date +%s.%N)
mkdir -p "$W"/{pki,kubeconfigs,etcd,img}
# Each node's kubelet refuses every pod below 512 MiB free (evictionHard below): say so now,
# not as a rollout that times out.
free_kib=$(df --output=avail "$W" | tail -1)
if (( free_kib < 2 * 1024 * 1024 )); then
  echo "only $((free_kib / 1024)) MiB free on the filesystem of $W: a node needs 2 GiB (images, containers, logs)" >&2
  exit 1
fi
# A run with other nodes than asked is taken down first (its state is kept per node).
for i in $(nodes_up); do
  if (( i > NODES )) && node_running "$i"; then echo "cluster has node $i; NODES=$NODES: bring it down first (cargo xtask cluster down)" >&2; exit 1; fi
done
# ---- network: the fabric and one veth per node. Nothing in the host namespace.
ip netns list | grep -qw "$FABRIC" || {
  ip netns add "$FABRIC"; ip -n "$FABRIC" link set lo up
  ip netns exec "$FABRIC" sysctl -qw net.ipv4.ip_forward=1
  # Nothing answers for another address: no default route, and unreachable for the rest.
  ip netns exec "$FABRIC" sysctl -qw net.ipv4.conf.all.rp_filter=1
}
for i in $(seq 1 "$NODES"); do
  ns=$(netns_of "$i")
  if ! ip netns list | grep -qw "$ns"; then
    ip netns add "$ns"; ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "n$i" netns "$FABRIC"
    ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0; ip -n "$ns" link set eth0 up
    ip -n "$FABRIC" addr add "$(fabric_ip "$i")/24" dev "n$i"; ip -n "$FABRIC" link set "n$i" up
    # A default route: the node's own connections to a ClusterIP (the agent's to
    # 10.96.0.1:443) are routed before kube-proxy's DNAT, and the agent needs an uplink.
    ip -n "$ns" route add default via "$(fabric_ip "$i")"
    ip -n "$FABRIC" route replace "$(pod_cidr "$i")" via "$(node_ip "$i")"
  fi
done
# ---- PKI and credentials (once per cluster state).
P=$W/pki
if [[ ! -f $P/ca.crt ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$P/ca.key" -out "$P/ca.crt" -days 3650 -subj /CN=palk-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$P/apiserver.key" -out "$P/apiserver.csr" -subj /CN=kube-apiserver 2>/dev/null
  printf "subjectAltName=IP:127.0.0.1,IP:%s,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n" "$API_IP" > "$P/ext.cnf"
  openssl x509 -req -in "$P/apiserver.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -out "$P/apiserver.crt" -days 3650 -extfile "$P/ext.cnf" 2>/dev/null
  openssl genrsa -out "$P/sa.key" 2048 2>/dev/null; openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
fi
tok() { [[ -f $P/$1.token ]] || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$P/$1.token"; cat "$P/$1.token"; }
{
  echo "$(tok admin),admin,admin,system:masters"
  echo "$(tok kube-proxy),system:kube-proxy,kube-proxy"
  echo "$(tok scheduler),system:kube-scheduler,kube-scheduler"
  echo "$(tok kcm),system:kube-controller-manager,kube-controller-manager"
  for i in $(seq 1 "$NODES"); do n=$(node_name "$i"); echo "$(tok "$n"),system:node:$n,$n,system:nodes"; done
} > "$P/tokens.csv.new"
if ! cmp -s "$P/tokens.csv.new" "$P/tokens.csv"; then
  mv "$P/tokens.csv.new" "$P/tokens.csv"
  node_running 1 && { echo "the node list changed: restart the cluster (cargo xtask cluster down)" >&2; exit 1; }
else rm -f "$P/tokens.csv.new"; fi
kubeconfig() { # NAME TOKEN SERVER
  cat > "$W/kubeconfigs/$1" <<KC
apiVersion: v1
kind: Config
clusters: [{name: palisade, cluster: {server: "$3", certificate-authority: $P/ca.crt}}]
users: [{name: $1, user: {token: $2}}]
contexts: [{name: palisade, context: {cluster: palisade, user: $1}}]
current-context: palisade
KC
}
SERVER=https://$API_IP:$API_PORT
for u in admin kube-proxy scheduler kcm; do kubeconfig "$u" "$(tok "$u")" "$SERVER"; done
for i in $(seq 1 "$NODES"); do n=$(node_name "$i"); kubeconfig "$n" "$(tok "$n")" "$SERVER"; done
cp "$W/kubeconfigs/admin" "$W/admin.kubeconfig"
kubeconfig host "$(tok admin)" "https://127.0.0.1:$HOST_API_PORT"; mv "$W/kubeconfigs/host" "$W/kubeconfig"
# ---- per node: containerd, CNI, kubelet and kube-proxy configuration.
for i in $(seq 1 "$NODES"); do
  N=$W/node-$i; n=$(node_name "$i")
  # A running node keeps its files: kube-proxy exits when its configuration file changes.
  node_running "$i" && continue
  mkdir -p "$N"/{log,kubelet,varlib,varlog,sysctl,cni/net.d,containerd}
  cat > "$N/containerd.toml" <<C
version = 2
root = "$N/containerd/root"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.opt"]
[grpc]
  address = "$N/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.gcr.io/pause:3.2"
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"
  enable_selinux = false
  max_container_log_line_size = 16384
  # Root here may lack CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj (a sandbox's -998
  # fails with "nsexec: failed to update /proc/self/oom_score_adj"): clamp to containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$N/cni/net.d"
C
  # ptp: one veth per pod (node side veth<hex>, a /32 route each), host-local addresses.
  cat > "$N/cni/net.d/10-palk.conflist" <<J
{"cniVersion": "0.4.0", "name": "palk", "plugins": [
  {"type": "ptp", "ipMasq": false, "mtu": 1500,
   "ipam": {"type": "host-local", "dataDir": "$N/cni/ipam", "ranges": [[{"subnet": "$(pod_cidr "$i")"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
J
  cat > "$N/kubelet.yaml" <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}, x509: {clientCAFile: "$P/ca.crt"}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
cgroupRoot: $(cgroup_of "$i")
address: $(node_ip "$i")
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
resolvConf: $N/resolv.conf
serializeImagePulls: false
# Absolute floors, not percentages: the node shares the host's disk, and 2% of a large, busy
# disk (a cold build beside it) put the node under DiskPressure, which refuses every pod.
evictionHard: {"memory.available": "100Mi", "nodefs.available": "512Mi", "imagefs.available": "512Mi"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
Y
  echo "search cluster.local" > "$N/resolv.conf"
  cat > "$N/kube-proxy.yaml" <<Y
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$W/kubeconfigs/kube-proxy"}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $n
bindAddress: 0.0.0.0
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# 0: leave the kernel's conntrack settings alone (the hash size is the host's).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
Y
done
# ---- start: per node one launcher in its network namespace with a private mount namespace.
for i in $(seq 1 "$NODES"); do
  N=$W/node-$i
  node_running "$i" && continue
  rm -f "$N/up" "$N/inner.pid"
  setsid nsenter --net="/run/netns/$(netns_of "$i")" -- unshare --mount --propagation slave -- \
    bash "$H/node.sh" "$i" > "$N/log/launcher.log" 2>&1 < /dev/null &
  echo $! > "$N/launcher.pid"
  if (( i == 1 )); then # the API server first, so the other kubelets register at once
    for _ in $(seq 1 120); do grep -q "apiserver ready" "$N/log/launcher.log" 2>/dev/null && break; sleep 0.5; done
  fi
done
for _ in $(seq 1 60); do node_running 1 && break; sleep 0.5; done
# ---- the API server on the host's loopback, for kubectl --kubeconfig $W/kubeconfig.
if ! { [[ -f $W/forward.pid ]] && kill -0 "$(cat "$W/forward.pid")" 2>/dev/null; }; then
  setsid socat "TCP-LISTEN:$HOST_API_PORT,bind=127.0.0.1,reuseaddr,fork" \
    "EXEC:nsenter --net=/run/netns/$(netns_of 1) socat STDIO TCP\:127.0.0.1\:$API_PORT" \
    > "$W/forward.log" 2>&1 < /dev/null &
  echo $! > "$W/forward.pid"
fi
# ---- wait for every node to be Ready.
for i in $(seq 1 "$NODES"); do
  n=$(node_name "$i")
  for s in $(seq 1 240); do
    [[ -f $W/node-$i/up ]] && [[ $(node_exec 1 kubectl get node "$n" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]] && break
    if (( s == 240 )); then
      # `cluster down` removes $W: say now what the node's logs say.
      {
        echo "node $n not Ready after 120 s; disk: $(df -h --output=avail,pcent "$W" | tail -1)"
        [[ -f $W/node-$i/up ]] || echo "its launcher never said it was up"
        node_exec 1 kubectl get node "$n" -o 'jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' || true
        for f in "$W/node-$i"/log/*.log; do echo "---- $f"; tail -20 "$f"; done
      } >&2
      exit 1
    fi
    sleep 0.5
  done
done
printf 'cluster of %d node(s) Ready after %.1f s\n' "$NODES" "$(echo "$(date +%s.%N) - $t0" | bc)"
