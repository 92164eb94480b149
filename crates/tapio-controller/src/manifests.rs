//! Tests that keep the Kubernetes manifests in docs/kubernetes honest:
//! valid YAML, the kinds and fields Kubernetes requires, the security
//! posture the docs promise, and a profile that compiles.

use serde_yaml::Value;

fn docs() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/kubernetes");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((p.display().to_string(), v));
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

#[test]
fn every_document_has_the_required_fields() {
    let all = docs();
    let mut kinds: Vec<&str> = all.iter().map(|(_, v)| s(v, &["kind"])).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["ConfigMap", "DaemonSet", "Deployment", "Service"]);
    for (file, v) in &all {
        for f in [
            &["apiVersion"][..],
            &["metadata", "name"],
            &["metadata", "namespace"],
        ] {
            let _ = s(v, f);
        }
        assert_eq!(s(v, &["metadata", "namespace"]), "tapio", "{file}");
    }
}

#[test]
fn the_agent_uses_capabilities_not_privileged_and_reads_the_host_read_only() {
    let ds = of_kind(&docs(), "DaemonSet");
    assert_eq!(s(&ds, &["apiVersion"]), "apps/v1");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let c = &spec["containers"][0];
    let _ = s(c, &["image"]);
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], Value::Bool(false));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false));
    let add: Vec<&str> = sc["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for cap in ["BPF", "PERFMON", "NET_ADMIN"] {
        assert!(add.contains(&cap), "{cap}");
    }
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    for path in ["/sys/kernel/btf", "/sys/fs/bpf", "/sys/fs/cgroup"] {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("{path} not mounted"));
        assert_eq!(m["readOnly"], Value::Bool(true), "{path}");
    }
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.iter().any(|a| a.starts_with("--controller=http://")));
}

#[test]
fn the_controller_is_unprivileged_and_serves_the_configmap_profile() {
    let all = docs();
    let dep = of_kind(&all, "Deployment");
    let svc = of_kind(&all, "Service");
    let cm = of_kind(&all, "ConfigMap");
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&dep["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(
        &svc["spec"]["selector"], labels,
        "the Service selects the controller pods"
    );
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(c["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(
        dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        Value::Bool(true)
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(args.contains(&"--profile=/etc/tapio/profile.yaml"));
    assert_eq!(
        s(
            &dep["spec"]["template"]["spec"]["volumes"][0],
            &["configMap", "name"]
        ),
        s(&cm, &["metadata", "name"])
    );
    let profile = s(&cm, &["data", "profile.yaml"]);
    let compiled = crate::profile_store::parse(profile).expect("the ConfigMap's profile compiles");
    assert_eq!(compiled.profile, "cluster-default");
    assert_eq!(svc["spec"]["ports"][0]["port"], Value::from(7070));
}

#[test]
fn workflows_are_yaml_with_real_steps_using_the_makefile() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
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
