#!/usr/bin/env bash
# Runs a command inside node I's network and mount namespaces, with the cluster's admin
# kubeconfig, the Kubernetes binaries and the node's containerd (ctr) in reach.
# Usage: exec.sh I CMD...
source "$(dirname "$(realpath "$0")")/common.sh"
i=$1; shift
node_exec "$i" "$@"
