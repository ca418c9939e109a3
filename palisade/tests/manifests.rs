//! `manifests/` parses as the Kubernetes objects it claims to be, and says what the agent
//! needs and no more: read-only access to exactly the resources it watches, the node name from
//! the downward API, bpffs shared with the host, health and readiness probes; the image of this
//! release, the cluster's settings from a generated ConfigMap an overlay can replace; and
//! `manifests/uninstall/` runs `palisade uninstall` on the host's pins.

use std::{collections::BTreeSet, fs, path::Path, process::Command};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Container, Namespace, PodSpec, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::Deserialize;

/// The image's name, as the DaemonSets and the kustomizations' `images:` spell it.
const IMAGE: &str = "ghcr.io/palisade/palisade";

fn manifests() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Every YAML document of a file under `manifests/`.
fn documents(file: &str) -> Vec<serde_yaml_ng::Value> {
    let text = fs::read_to_string(manifests().join(file)).expect(file);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect(file))
        .collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> Vec<T> {
    documents(file)
        .into_iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|d| serde_yaml_ng::from_value(d).unwrap_or_else(|e| panic!("{file}: {kind}: {e}")))
        .collect()
}

/// The pod spec of the one DaemonSet in `file`, and its namespace.
fn daemonset(file: &str) -> (PodSpec, String) {
    let sets: Vec<DaemonSet> = of_kind(file, "DaemonSet");
    assert_eq!(sets.len(), 1, "{file}");
    let namespace = sets[0].metadata.namespace.clone().expect("a namespace");
    let spec = sets[0].spec.clone().expect("spec");
    (spec.template.spec.expect("pod spec"), namespace)
}

/// The files `dir/kustomization.yaml` lists are exactly the YAML files of `dir`.
fn lists_every_manifest(dir: &str) {
    let kustomization = &documents(&format!("{dir}/kustomization.yaml"))[0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect();
    let present: BTreeSet<String> = fs::read_dir(manifests().join(dir))
        .expect("manifests/")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "{dir}");
}

#[test]
fn the_kustomization_lists_every_manifest() {
    lists_every_manifest(".");
    lists_every_manifest("uninstall");
    assert_eq!(of_kind::<Namespace>("namespace.yaml", "Namespace").len(), 1);
}

/// Not `latest`, whose default pull policy is `Always`: an image loaded on the node (air-gapped,
/// `ctr import`) would never start.
fn runs_this_release(container: &Container) {
    let version = env!("CARGO_PKG_VERSION");
    let image = container.image.as_deref().expect("an image");
    let (name, tag) = image.rsplit_once(':').expect("a tagged image");
    assert_eq!(name, IMAGE, "{}", container.name);
    assert!(!tag.is_empty() && tag != "latest", "{image}");
    assert_eq!(tag, version, "{}: the workspace version", container.name);
    assert_eq!(
        container.image_pull_policy.as_deref(),
        Some("IfNotPresent"),
        "{}",
        container.name
    );
}

/// The `images:` entry an overlay replaces: this release's tag.
fn overrides_the_image(dir: &str) {
    let kustomization = &documents(&format!("{dir}/kustomization.yaml"))[0];
    let images = kustomization["images"].as_sequence().expect("images");
    assert_eq!(images.len(), 1, "{dir}");
    assert_eq!(images[0]["name"].as_str(), Some(IMAGE), "{dir}");
    assert_eq!(
        images[0]["newTag"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "{dir}"
    );
}

#[test]
fn every_container_runs_this_release_and_the_image_is_a_kustomize_override() {
    let (agent, _) = daemonset("daemonset.yaml");
    let (uninstall, _) = daemonset("uninstall/daemonset.yaml");
    let containers = [&agent, &uninstall]
        .into_iter()
        .flat_map(|pod| pod.init_containers.iter().flatten().chain(&pod.containers));
    for container in containers {
        runs_this_release(container);
    }
    overrides_the_image(".");
    overrides_the_image("uninstall");
}

#[test]
fn the_service_ranges_come_from_a_generated_config_map() {
    let (pod, namespace) = daemonset("daemonset.yaml");
    let from = pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PALISADE_SERVICE_CIDRS")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.config_map_key_ref.as_ref())
        .expect("PALISADE_SERVICE_CIDRS from a ConfigMap");
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("palisade-config", "service-cidrs")
    );
    assert_ne!(from.optional, Some(true));

    let kustomization = &documents("kustomization.yaml")[0];
    let generators = kustomization["configMapGenerator"]
        .as_sequence()
        .expect("configMapGenerator");
    let config = generators
        .iter()
        .find(|g| g["name"].as_str() == Some("palisade-config"))
        .expect("palisade-config generated");
    // The generated map must land where the DaemonSet reads it.
    assert_eq!(config["namespace"].as_str(), Some(namespace.as_str()));
    let ranges = config["literals"]
        .as_sequence()
        .expect("literals")
        .iter()
        .find_map(|l| l.as_str()?.strip_prefix("service-cidrs="))
        .expect("a service-cidrs literal");
    for range in ranges.split(',') {
        range
            .parse::<ipnet::IpNet>()
            .unwrap_or_else(|e| panic!("service-cidrs {range}: {e}"));
    }
}

#[test]
fn the_uninstall_daemonset_runs_palisade_uninstall_on_the_hosts_pins() {
    let (pod, namespace) = daemonset("uninstall/daemonset.yaml");
    // Its own namespace: it runs while the agent's is still terminating.
    let (_, agent_namespace) = daemonset("daemonset.yaml");
    assert_ne!(namespace, agent_namespace);
    assert_eq!(
        of_kind::<Namespace>("uninstall/namespace.yaml", "Namespace")[0]
            .metadata
            .name
            .as_deref(),
        Some(namespace.as_str())
    );
    let init = pod.init_containers.as_ref().expect("an init container");
    let uninstall = &init[0];
    let args = uninstall.args.as_ref().expect("args");
    assert_eq!(args[0], "uninstall");
    assert!(
        !args.iter().any(|a| a == "--force"),
        "never under a live agent"
    );
    let privileged = uninstall
        .security_context
        .as_ref()
        .and_then(|s| s.privileged);
    assert_eq!(privileged, Some(true));
    let host_path = |path: &str| {
        let mount = uninstall
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{path} mounted"));
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
    };
    assert_eq!(host_path("/sys/fs/bpf").as_deref(), Some("/sys/fs/bpf"));
    let socket_dir = Path::new(palisade::flows::socket::DEFAULT_SOCKET)
        .parent()
        .and_then(|p| p.to_str())
        .expect("socket directory");
    assert_eq!(host_path(socket_dir).as_deref(), Some(socket_dir));
    assert!(
        Path::new(palisade::dataplane::pin::DEFAULT_ROOT).starts_with("/sys/fs/bpf"),
        "the pin root is inside the mounted bpffs"
    );
}

/// `to` as seen from `from` (both absolute): `../..`/the rest.
fn relative(from: &Path, to: &Path) -> std::path::PathBuf {
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let up = from.components().skip(common).map(|_| Path::new(".."));
    up.chain(
        to.components()
            .skip(common)
            .map(|c| Path::new(c.as_os_str())),
    )
    .collect()
}

/// `kubectl kustomize` renders the base, the uninstall base and an overlay that replaces the
/// image and the Service ranges as the README says. Skipped (with a note) without kubectl.
#[test]
fn kustomize_renders_the_bases_and_an_overlay() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl not found: kustomize rendering not checked");
        return;
    }
    let render = |dir: &Path| {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(dir)
            .output()
            .expect("kubectl kustomize");
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let version = env!("CARGO_PKG_VERSION");
    let base = render(&manifests());
    assert!(
        base.contains(&format!("image: {IMAGE}:{version}")),
        "{base}"
    );
    assert!(base.contains("service-cidrs: 10.96.0.0/12"), "{base}");
    let uninstall = render(&manifests().join("uninstall"));
    assert!(uninstall.contains(&format!("image: {IMAGE}:{version}")));

    // Kustomize takes only relative paths to a base.
    let overlay = Path::new(env!("CARGO_TARGET_TMPDIR")).join("overlay");
    fs::create_dir_all(&overlay).expect("overlay directory");
    let base = relative(
        &overlay.canonicalize().expect("overlay"),
        &manifests().canonicalize().expect("manifests/"),
    );
    fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "resources: [{}]\n\
             images: [{{name: {IMAGE}, newName: registry.example/palisade, newTag: dev}}]\n\
             configMapGenerator:\n\
             - {{name: palisade-config, namespace: palisade-system, behavior: merge, \
             literals: [service-cidrs=10.32.0.0/16]}}\n",
            base.display()
        ),
    )
    .expect("overlay");
    let rendered = render(&overlay);
    let _ = fs::remove_dir_all(&overlay);
    assert!(
        rendered.contains("image: registry.example/palisade:dev"),
        "{rendered}"
    );
    assert!(
        rendered.contains("service-cidrs: 10.32.0.0/16"),
        "{rendered}"
    );
    assert!(!rendered.contains("10.96.0.0/12"), "{rendered}");
    // The DaemonSet reads the generated map under its hashed name.
    let generated = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: palisade-config-"))
        .expect("a generated palisade-config");
    assert!(
        rendered
            .matches(&format!("palisade-config-{generated}"))
            .count()
            >= 2
    );
}

#[test]
fn the_agent_may_only_read_what_it_enforces() {
    let roles: Vec<ClusterRole> = of_kind("rbac.yaml", "ClusterRole");
    assert_eq!(roles.len(), 1);
    let mut granted = BTreeSet::new();
    for rule in roles[0].rules.iter().flatten() {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(verbs, ["get", "list", "watch"], "read-only: {rule:?}");
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                granted.insert(format!("{group}/{resource}"));
            }
        }
    }
    let wanted: BTreeSet<String> = [
        "/pods",
        "/namespaces",
        "/nodes",
        "networking.k8s.io/networkpolicies",
        "policy.networking.k8s.io/clusternetworkpolicies",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(granted, wanted);

    let accounts: Vec<ServiceAccount> = of_kind("rbac.yaml", "ServiceAccount");
    let bindings: Vec<ClusterRoleBinding> = of_kind("rbac.yaml", "ClusterRoleBinding");
    let subject = &bindings[0].subjects.as_ref().expect("subjects")[0];
    assert_eq!(Some(&subject.name), accounts[0].metadata.name.as_ref());
    assert_eq!(subject.namespace, accounts[0].metadata.namespace);
    assert_eq!(
        Some(&bindings[0].role_ref.name),
        roles[0].metadata.name.as_ref()
    );
}

#[test]
fn the_daemonset_runs_on_the_host_network_with_bpffs_and_probes() {
    let sets: Vec<DaemonSet> = of_kind("daemonset.yaml", "DaemonSet");
    let spec = sets[0].spec.as_ref().expect("spec");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("palisade-agent"));
    let agent = &pod.containers[0];
    let node_name = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PALISADE_NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(node_name, Some("spec.nodeName"));
    // On the node's loopback: the agent serves there (hostNetwork), not on every address.
    let probe_path = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        let get = p.and_then(|p| p.http_get.as_ref())?;
        assert_eq!(get.host.as_deref(), Some("127.0.0.1"));
        get.path.clone()
    };
    assert_eq!(
        probe_path(agent.liveness_probe.as_ref()).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(agent.readiness_probe.as_ref()).as_deref(),
        Some("/readyz")
    );
    assert!(
        agent
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some()
    );
    // The mount at `path` and the host path of its volume.
    let host_mount = |path: &str| {
        let mount = agent
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{path} mounted"));
        let host = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone());
        (mount, host)
    };
    let (mount, host) = host_mount("/sys/fs/bpf");
    assert_eq!(mount.mount_propagation.as_deref(), Some("Bidirectional"));
    assert_eq!(host.as_deref(), Some("/sys/fs/bpf"));
    // Kubernetes allows Bidirectional propagation only in privileged containers.
    let privileged = agent.security_context.as_ref().and_then(|s| s.privileged);
    assert_eq!(privileged, Some(true));
    // The agent's socket is where `palisade flows` looks by default, on the host as well.
    let socket_dir = Path::new(palisade::flows::socket::DEFAULT_SOCKET)
        .parent()
        .and_then(|p| p.to_str())
        .expect("socket directory");
    let (_, host) = host_mount(socket_dir);
    assert_eq!(host.as_deref(), Some(socket_dir));
}
