//! The Kubernetes manifests in docs/kubernetes and the CI workflows, held
//! to what a cluster and GitHub would accept:
//! - every object passes `kubernetes-validate --strict` (PyPI) against two
//!   Kubernetes versions;
//! - the invariants no schema checks hold across objects: namespaces,
//!   service accounts, ports and probes, volumes, the ConfigMap, the PVC,
//!   the Service selector, the kustomization's resource list;
//! - the security posture docs/kubernetes.md promises;
//! - the profile in the ConfigMap compiles.

mod common;

use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/kubernetes")
}

/// Every object of every manifest, with its file name.
fn objects() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, v));
        }
    }
    out
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for k in path {
        cur = &cur[*k];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("missing {}", path.join(".")))
}

fn of_kind(all: &[(String, Value)], kind: &str) -> Value {
    all.iter()
        .find(|(_, v)| v["kind"] == kind)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

/// A container's plain `env` entries, as (name, value).
fn env_of(c: &Value) -> Vec<(&str, &str)> {
    c["env"]
        .as_sequence()
        .map(|e| {
            e.iter()
                .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Every label of `selector` is on `labels` (how Kubernetes matches).
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

fn kubernetes_validate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("kubernetes-validate"))
            .find(|p| p.exists())
    }) {
        return Some(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let venv = std::env::var_os("TAPIO_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or(home.join(".cache/tapio-kernels"))
        .join("venv/bin/kubernetes-validate");
    venv.exists().then_some(venv)
}

#[test]
fn every_object_passes_strict_schema_validation_on_two_kubernetes_versions() {
    let Some(kv) = kubernetes_validate() else {
        common::skip(
            "manifests::kubernetes_validate",
            "kubernetes-validate not installed (make setup installs it from PyPI)",
        );
        return;
    };
    let files: Vec<PathBuf> = {
        let mut f: BTreeSet<PathBuf> = BTreeSet::new();
        for (name, _) in objects() {
            f.insert(dir().join(name));
        }
        f.into_iter().collect()
    };
    for version in ["1.30.0", "1.37.0"] {
        let out = std::process::Command::new(&kv)
            .args(["--strict", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !text.contains("ERROR") && !text.contains("WARN"),
            "kubernetes-validate --strict -k {version}:\n{text}"
        );
        assert_eq!(
            text.matches(" passed for resource ").count(),
            objects().len(),
            "every object validated:\n{text}"
        );
    }
}

#[test]
fn objects_agree_with_each_other() {
    let all = objects();
    let ns = of_kind(&all, "Namespace");
    let ns_name = s(&ns, &["metadata", "name"]);
    // Pod Security: the agent needs the privileged level; say so explicitly.
    assert_eq!(
        s(
            &ns,
            &["metadata", "labels", "pod-security.kubernetes.io/enforce"]
        ),
        "privileged"
    );
    for (file, v) in &all {
        if v["kind"] != "Namespace" {
            assert_eq!(s(v, &["metadata", "namespace"]), ns_name, "{file}");
        }
    }
    let names_of = |kind: &str| -> BTreeSet<String> {
        all.iter()
            .filter(|(_, v)| v["kind"] == kind)
            .map(|(_, v)| s(v, &["metadata", "name"]).to_string())
            .collect()
    };
    let sas = names_of("ServiceAccount");
    let cms = names_of("ConfigMap");
    let pvcs = names_of("PersistentVolumeClaim");
    for (sa, v) in all.iter().filter(|(_, v)| v["kind"] == "ServiceAccount") {
        assert_eq!(
            v["automountServiceAccountToken"],
            Value::Bool(false),
            "{sa}"
        );
    }
    for kind in ["DaemonSet", "Deployment"] {
        let w = of_kind(&all, kind);
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&w["spec"]["selector"]["matchLabels"], labels),
            "{kind}"
        );
        let pod = &w["spec"]["template"]["spec"];
        assert!(sas.contains(s(pod, &["serviceAccountName"])), "{kind}");
        assert_eq!(pod["automountServiceAccountToken"], Value::Bool(false));
        let volumes: BTreeSet<&str> = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| s(v, &["name"]))
            .collect();
        let mut used = BTreeSet::new();
        for c in pod["containers"].as_sequence().unwrap() {
            let ports: BTreeSet<&str> = c["ports"]
                .as_sequence()
                .map(|p| p.iter().map(|p| s(p, &["name"])).collect())
                .unwrap_or_default();
            for m in c["volumeMounts"].as_sequence().unwrap() {
                assert!(volumes.contains(s(m, &["name"])), "{kind}: mount {m:?}");
                used.insert(s(m, &["name"]));
            }
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let port = &c[probe]["httpGet"]["port"];
                if let Some(p) = port.as_str() {
                    assert!(ports.contains(p), "{kind}: {probe} port {p}");
                }
            }
            assert!(
                !c["livenessProbe"].is_null(),
                "{kind}: every container has a liveness probe"
            );
            assert!(!c["resources"]["requests"].is_null(), "{kind}: requests");
            assert!(
                !c["resources"]["limits"]["memory"].is_null(),
                "{kind}: limits"
            );
        }
        assert_eq!(
            used, volumes,
            "{kind}: every volume is mounted, and only those"
        );
        for v in pod["volumes"].as_sequence().unwrap() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(cms.contains(cm), "{kind}: ConfigMap {cm}");
            }
            if let Some(c) = v["persistentVolumeClaim"]["claimName"].as_str() {
                assert!(pvcs.contains(c), "{kind}: PVC {c}");
            }
        }
    }
    // The Service selects the controller's pods and targets its named port.
    let svc = of_kind(&all, "Service");
    let dep = of_kind(&all, "Deployment");
    assert!(selects(
        &svc["spec"]["selector"],
        &dep["spec"]["template"]["metadata"]["labels"]
    ));
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let port = &svc["spec"]["ports"][0];
    let target = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("targetPort names a container port");
    assert_eq!(port["port"], target["containerPort"]);
    // The agent reaches the controller through this Service and port.
    let ds = of_kind(&all, "DaemonSet");
    let url = format!(
        "--controller=http://{}.{ns_name}.svc:{}",
        s(&svc, &["metadata", "name"]),
        port["port"].as_u64().unwrap()
    );
    assert!(
        strs(&ds["spec"]["template"]["spec"]["containers"][0]["args"]).contains(&url.as_str()),
        "{url}"
    );
    // The kustomization lists every manifest, and nothing else.
    let k: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap())
            .unwrap();
    let listed: BTreeSet<&str> = strs(&k["resources"]).into_iter().collect();
    let files: BTreeSet<String> = all.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(
        listed,
        files.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    assert_eq!(s(&k, &["namespace"]), ns_name);
}

#[test]
fn the_agent_holds_exactly_bpf_and_perfmon_and_reads_the_host_read_only() {
    let all = objects();
    let ds = of_kind(&all, "DaemonSet");
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], Value::Bool(false));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false));
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true));
    // Unconfined, with the reason in the manifest: the runtime default
    // profile refuses bpf() without CAP_SYS_ADMIN (docs/kubernetes.md).
    assert_eq!(s(sc, &["seccompProfile", "type"]), "Unconfined");
    assert_eq!(strs(&sc["capabilities"]["add"]), ["BPF", "PERFMON"]);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    for path in ["/host/sys/fs/cgroup", "/etc/machine-id"] {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("{path} not mounted"));
        assert_eq!(m["readOnly"], Value::Bool(true), "{path}");
    }
    let env = env_of(c);
    assert!(env.contains(&("TAPIO_CGROUP_ROOT", "/host/sys/fs/cgroup")));
}

#[test]
fn the_controller_is_unprivileged_probes_healthz_and_serves_the_configmap_profile() {
    let all = objects();
    let dep = of_kind(&all, "Deployment");
    let cm = of_kind(&all, "ConfigMap");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(strs(&c["securityContext"]["capabilities"]["drop"]), ["ALL"]);
    assert!(c["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true)
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    assert_eq!(
        s(pod, &["securityContext", "seccompProfile", "type"]),
        "RuntimeDefault"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(s(c, &[probe, "httpGet", "path"]), "/healthz", "{probe}");
    }
    // It writes only the export: the one writable mount is the export's.
    let writable: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|m| m["readOnly"] != Value::Bool(true))
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert_eq!(writable, ["/var/lib/tapio-controller"]);
    let args = strs(&c["args"]);
    assert!(args.contains(&"--profile=/etc/tapio/profile.yaml"));
    // The export lives on the PVC.
    let export = args
        .iter()
        .find_map(|a| a.strip_prefix("--export-dir="))
        .unwrap();
    let export_mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| export.starts_with(s(m, &["mountPath"])))
        .expect("the export dir is on a mounted volume");
    let vol = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == export_mount["name"])
        .unwrap();
    assert!(!vol["persistentVolumeClaim"].is_null(), "export on a PVC");
    let profile: tapio_profile::EvidenceProfile =
        serde_yaml::from_str(s(&cm, &["data", "profile.yaml"])).unwrap();
    let compiled = tapio_profile::compile(&profile).expect("the ConfigMap's profile compiles");
    assert_eq!(compiled.profile, "cluster-default");
}
#[test]
fn workflows_are_yaml_with_real_steps_using_the_makefile() {
    let root = env!("CARGO_MANIFEST_DIR");
    let makefile = std::fs::read_to_string(format!("{root}/Makefile")).unwrap();
    let targets: Vec<&str> = makefile
        .lines()
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| {
            !t.is_empty()
                && !t.starts_with(['\t', '#', '.'])
                && !t.contains(' ')
                && !t.contains('=')
        })
        .collect();
    for wf in ["ci.yml", "release.yml"] {
        let text = std::fs::read_to_string(format!("{root}/.github/workflows/{wf}")).unwrap();
        let v: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{wf}: {e}"));
        let jobs = v["jobs"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{wf}: no jobs"));
        assert!(!jobs.is_empty());
        let mut make_calls = 0;
        for (name, job) in jobs {
            let steps = job["steps"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{wf}: job {name:?} has no steps"));
            assert!(!steps.is_empty());
            for step in steps {
                assert!(
                    step["run"].is_string() || step["uses"].is_string(),
                    "{wf}: a step without run/uses"
                );
                if let Some(run) = step["run"].as_str() {
                    for word in run.split_whitespace().collect::<Vec<_>>().windows(2) {
                        if word[0] == "make" {
                            assert!(
                                targets.contains(&word[1]),
                                "{wf}: make {} is not a Makefile target",
                                word[1]
                            );
                            make_calls += 1;
                        }
                    }
                }
            }
        }
        assert!(make_calls >= 2, "{wf} uses the Makefile targets");
    }
}
