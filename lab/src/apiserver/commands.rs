//! The command lines of the cluster's three processes and the kubeconfig that reaches it.

use std::{path::Path, process::Command};

use super::pki::Pki;

pub(super) fn kubeconfig_yaml(api_port: u16, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: palisade-test
  cluster:
    server: https://127.0.0.1:{api_port}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: palisade-test
  context:
    cluster: palisade-test
    user: admin
    namespace: default
current-context: palisade-test
",
        ca = ca.display()
    )
}

/// etcd serves its metrics on the client port (no `--listen-metrics-urls`); the peer port is
/// unused by a one-member cluster but must not be the default 2380 every run would share.
pub(super) fn etcd_cmd(etcd: &Path, dir: &Path, client: u16, peer: u16) -> Command {
    let mut cmd = Command::new(etcd);
    cmd.arg("--name=palisade-test")
        .arg(format!("--data-dir={}", dir.join("etcd-data").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!(
            "--initial-cluster=palisade-test=http://127.0.0.1:{peer}"
        ));
    cmd
}

pub(super) fn apiserver_cmd(
    bin: &Path,
    dir: &Path,
    pki: &Pki,
    tokens: &Path,
    port: u16,
    etcd_port: u16,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        // No kubelets, no endpoints to reconcile for the `kubernetes` Service.
        .arg("--endpoint-reconciler-type=none")
        .arg(format!("--tls-cert-file={}", pki.server_crt.display()))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.server_key.display()
        ))
        .arg(format!("--client-ca-file={}", pki.ca_crt.display()))
        .arg(format!("--token-auth-file={}", tokens.display()))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!(
            "--service-account-key-file={}",
            pki.sa_pub.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki.sa_key.display()
        ))
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        .arg("--allow-privileged=true")
        // Pods here never run (no kubelet), so they need no service-account token; without
        // this plugin a pod can be created right after its namespace, instead of racing the
        // controller-manager for the namespace's `default` account and its token secret.
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg(format!("--cert-dir={}", dir.join("certs").display()))
        .arg("--profiling=false");
    cmd
}

pub(super) fn kcm_cmd(bin: &Path, kubeconfig: &Path, pki: &Pki) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--leader-elect=false")
        // It serves nothing a test needs: no HTTPS port, and no plain HTTP either (v1.20 still
        // serves that on 0.0.0.0:10252 by default).
        .arg("--secure-port=0")
        .arg("--port=0")
        // Namespace deletion, service accounts and owner references; nothing that needs nodes.
        .arg("--controllers=namespace,serviceaccount,serviceaccount-token,garbagecollector")
        .arg(format!(
            "--service-account-private-key-file={}",
            pki.sa_key.display()
        ))
        .arg(format!("--root-ca-file={}", pki.ca_crt.display()))
        .arg("--profiling=false");
    cmd
}
