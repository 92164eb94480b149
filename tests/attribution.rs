//! Workload attribution on the real kernel: cgroup directories created
//! exactly as kubelet and the container runtimes name them, under both
//! cgroup drivers and every QoS class, each holding processes that cause a
//! refused connect, an abnormal exit and an OOM kill. Every event must
//! carry the exact pod UID, container id and QoS class of its cgroup; the
//! oracle is the directory the test created and moved the process into.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One kubelet-shaped cgroup: its path below the v2 root, and the facts
/// that path states.
struct Layout {
    rel: String,
    pod_uid: Option<String>,
    container_id: Option<String>,
    qos: Option<&'static str>,
    unit: Option<String>,
}

fn layouts(tag: u32) -> Vec<Layout> {
    let uid = |i: u32| {
        format!(
            "{tag:08x}-{i:04x}-4abc-8def-{:012x}",
            u64::from(tag) * 31 + u64::from(i)
        )
    };
    let cid = |i: u32| format!("{:016x}{:048x}", u64::from(tag), i);
    let mut v = Vec::new();
    for (i, (qos, runtime)) in [
        ("guaranteed", "cri-containerd"),
        ("burstable", "crio"),
        ("besteffort", "docker"),
    ]
    .into_iter()
    .enumerate()
    {
        let i = i as u32;
        let (u, c) = (uid(i), cid(i));
        let u_ = u.replace('-', "_");
        let pod = match qos {
            "guaranteed" => format!("/kubepods.slice/kubepods-pod{u_}.slice"),
            q => format!("/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{u_}.slice"),
        };
        v.push(Layout {
            rel: format!("{pod}/{runtime}-{c}.scope"),
            pod_uid: Some(u),
            container_id: Some(c),
            qos: Some(qos),
            unit: None,
        });
    }
    for (i, qos) in ["guaranteed", "burstable", "besteffort"]
        .into_iter()
        .enumerate()
    {
        let i = 10 + i as u32;
        let (u, c) = (uid(i), cid(i));
        let pod = match qos {
            "guaranteed" => format!("/kubepods/pod{u}"),
            q => format!("/kubepods/{q}/pod{u}"),
        };
        v.push(Layout {
            rel: format!("{pod}/{c}"),
            pod_uid: Some(u),
            container_id: Some(c),
            qos: Some(qos),
            unit: None,
        });
    }
    v.push(Layout {
        rel: format!("/system.slice/tapio-test-{tag}.service"),
        pod_uid: None,
        container_id: None,
        qos: None,
        unit: Some(format!("tapio-test-{tag}.service")),
    });
    v
}

/// The cgroup roots of this host: (v2 root, v1 memory root on hybrid hosts).
fn roots() -> Option<(PathBuf, Option<PathBuf>)> {
    let top = Path::new("/sys/fs/cgroup");
    if top.join("cgroup.controllers").exists() {
        return Some((top.to_path_buf(), None));
    }
    let uni = top.join("unified");
    let mem = top.join("memory");
    (uni.join("cgroup.procs").exists() && mem.join("memory.limit_in_bytes").exists())
        .then_some((uni, Some(mem)))
}

/// Creates `rel` under `root`; on a v2-only host with the memory
/// controller enabled down the chain and a 64 MiB limit on the leaf.
fn create(root: &Path, rel: &str, v2_memory: bool) -> PathBuf {
    let mut dir = root.to_path_buf();
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        if v2_memory {
            std::fs::write(dir.join("cgroup.subtree_control"), "+memory").unwrap();
        }
        dir = dir.join(seg);
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
        }
    }
    if v2_memory {
        std::fs::write(dir.join("memory.max"), "64M").unwrap();
        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    }
    dir
}

fn remove(root: &Path, rel: &str) {
    let segs: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    for n in (1..=segs.len()).rev() {
        let _ = std::fs::remove_dir(root.join(segs[..n].join("/")));
    }
}

fn assert_workload(e: &Value, l: &Layout, what: &str) {
    let f = &e["facts"];
    assert_eq!(
        f["cgroup_path"].as_str(),
        Some(l.rel.as_str()),
        "{what}: {e}"
    );
    assert_eq!(f["pod_uid"].as_str(), l.pod_uid.as_deref(), "{what}: {e}");
    assert_eq!(
        f["container_id"].as_str(),
        l.container_id.as_deref(),
        "{what}: {e}"
    );
    assert_eq!(f["qos_class"].as_str(), l.qos, "{what}: {e}");
    assert_eq!(f["systemd_unit"].as_str(), l.unit.as_deref(), "{what}: {e}");
}

#[test]
fn kubelet_shaped_cgroups_give_exact_pod_and_container_facts() {
    if !kernel_available("attribution::kubelet") {
        return;
    }
    let Some((v2, v1mem)) = roots() else {
        skip(
            "attribution::kubelet",
            "needs cgroup v2 (v2-only, or hybrid with the v1 memory controller)",
        );
        return;
    };
    let v2_memory = v1mem.is_none();
    let tag = std::process::id();
    let all = layouts(tag);
    let agent = Agent::start("attribution", &[]);
    agent.wait_log("observer process attached", Duration::from_secs(30));
    let mut runs = Vec::new();
    for l in &all {
        let leaf = create(&v2, &l.rel, v2_memory);
        let mut join = format!("echo $$ > {}/cgroup.procs", leaf.display());
        if let Some(mem) = &v1mem {
            let m = create(mem, &l.rel, false);
            std::fs::write(m.join("memory.limit_in_bytes"), "64M").unwrap();
            join = format!("echo $$ > {}/cgroup.procs && {join}", m.display());
        }
        // A refused connect from a child, then an abnormal exit (3).
        let port = closed_port();
        let mut sh = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{join} && bash -c ': > /dev/tcp/127.0.0.1/{port}' 2>/dev/null; exit 3"
            ))
            .spawn()
            .unwrap();
        let exit_pid = sh.id();
        assert_eq!(wait_child(&mut sh, "the exiting sh").code(), Some(3));
        // An OOM kill in the same cgroup.
        let mut hog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{join} && exec python3 -c 'a=[]\nwhile True: a.append(bytearray(1<<20))'"
            ))
            .spawn()
            .unwrap();
        let oom_pid = hog.id();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            wait_child(&mut hog, "the OOM hog").signal(),
            Some(9),
            "{}: OOM-killed",
            l.rel
        );
        runs.push((port, exit_pid, oom_pid));
    }
    let want = |ev: &[Value]| {
        runs.iter().all(|(port, e, o)| {
            let has = |t: &str, k: &str, v: u64| {
                ev.iter()
                    .any(|x| x["type"] == t && x["facts"][k].as_u64() == Some(v))
            };
            has(
                "kernel.network.connection_refused",
                "dst_port",
                u64::from(*port),
            ) && has("kernel.process.abnormal_exit", "pid", u64::from(*e))
                && has("kernel.process.oom_kill", "pid", u64::from(*o))
        })
    };
    agent.wait_events(Duration::from_secs(60), want);
    let done = agent.stop();
    for l in &all {
        remove(&v2, &l.rel);
        if let Some(mem) = &v1mem {
            remove(mem, &l.rel);
        }
    }
    for (l, (port, exit_pid, oom_pid)) in all.iter().zip(&runs) {
        let find = |t: &str, k: &str, v: u64| -> Vec<&Value> {
            done.events
                .iter()
                .filter(|x| x["type"] == t && x["facts"][k].as_u64() == Some(v))
                .collect()
        };
        let refused = find(
            "kernel.network.connection_refused",
            "dst_port",
            u64::from(*port),
        );
        assert_eq!(refused.len(), 1, "{}", l.rel);
        assert_workload(refused[0], l, "connection_refused");
        let exit = find("kernel.process.abnormal_exit", "pid", u64::from(*exit_pid));
        assert_eq!(exit.len(), 1, "{}", l.rel);
        assert_eq!(exit[0]["facts"]["exit_code"], 3);
        assert_workload(exit[0], l, "abnormal_exit");
        let oom = find("kernel.process.oom_kill", "pid", u64::from(*oom_pid));
        assert_eq!(oom.len(), 1, "{}", l.rel);
        assert_workload(oom[0], l, "oom_kill");
        // The memory cgroup: the same cgroup on a v2-only host; on a
        // hybrid host its own path in the v1 memory hierarchy.
        let memcg_path = oom[0]["facts"]["memcg_path"].as_str();
        if v1mem.is_some() {
            assert_eq!(memcg_path, Some(l.rel.as_str()), "{}", oom[0]);
        } else {
            assert_eq!(memcg_path, None, "{}", oom[0]);
        }
    }
    // Every event above was resolved (other processes on the host may
    // die in cgroups already removed: those are the unresolved ones).
    assert!(
        metric(
            &done.metrics,
            "tapio_cgroup_attribution_total{result=\"resolved\"}"
        ) >= 3 * all.len() as u64
    );
    assert_accounting(&done.metrics, "process");
    assert_accounting(&done.metrics, "network");
}

#[test]
fn a_cgroup_removed_before_resolution_gives_no_facts() {
    if !kernel_available("attribution::gone") {
        return;
    }
    let Some((v2, _)) = roots() else {
        skip("attribution::gone", "needs cgroup v2");
        return;
    };
    // The process dies and its cgroup is removed before the agent ever
    // saw the cgroup: the event keeps its cgroup_id, and states nothing
    // else. (A walk is at most every 100 ms; the agent starts after.)
    let rel = format!(
        "/kubepods/podfeedbeef-0000-4000-8000-{:012x}",
        std::process::id()
    );
    let agent = Agent::start("attribution-gone", &["--cgroup-root", v2.to_str().unwrap()]);
    agent.wait_log("observer process attached", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let leaf = create(&v2, &rel, false);
    use std::os::unix::fs::MetadataExt;
    let id = std::fs::metadata(&leaf).unwrap().ino();
    // The cgroup disappears right after the exit.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sh -c 'echo $$ > {}/cgroup.procs; exit 4'; echo $?",
            leaf.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4");
    remove(&v2, &rel);
    let evs = agent.wait_events(SLOW_KERNEL_DEADLINE, |ev| {
        ev.iter().any(|x| {
            x["type"] == "kernel.process.abnormal_exit"
                && x["facts"]["cgroup_id"].as_u64() == Some(id)
        })
    });
    let e = evs
        .iter()
        .find(|x| x["facts"]["cgroup_id"].as_u64() == Some(id))
        .unwrap();
    // Either the walk caught the directory in time (then the facts are
    // exact) or it did not (then there are none): never wrong ones.
    if let Some(p) = e["facts"]["cgroup_path"].as_str() {
        assert_eq!(p, rel);
        assert_eq!(e["facts"]["qos_class"], "guaranteed");
    } else {
        assert!(e["facts"].get("pod_uid").is_none(), "{e}");
        assert!(e["facts"].get("container_id").is_none(), "{e}");
    }
    let _ = agent.stop();
}
