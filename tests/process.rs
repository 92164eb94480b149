//! Real-kernel tests of the process observer: exits, group kills, the
//! ignore list and OOM kills, each with exact counts.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn for_pid(events: &[Value], pid: u32) -> Vec<Value> {
    events
        .iter()
        .filter(|e| {
            e["observer"] == "process" && e["facts"]["pid"].as_u64() == Some(u64::from(pid))
        })
        .cloned()
        .collect()
}

fn run_exit(code: i32) -> u32 {
    let mut c = Command::new("sh")
        .arg("-c")
        .arg(format!("exit {code}"))
        .spawn()
        .unwrap();
    let pid = c.id();
    let st = c.wait().unwrap();
    assert_eq!(st.code(), Some(code));
    pid
}

fn settle(agent: &Agent, pid: u32, want: usize) {
    agent.wait_events(Duration::from_secs(10), |ev| for_pid(ev, pid).len() >= want);
    std::thread::sleep(Duration::from_millis(400));
}

#[test]
fn exits_are_one_event_per_process_and_only_abnormal_ones() {
    if !kernel_available("process::exits") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let agent = Agent::start("exits", &[]);
    agent.wait_log("observer process attached", Duration::from_secs(10));
    let three = run_exit(3);
    let zero = run_exit(0);
    // 8 threads, killed by SIGKILL: one process, one event.
    let mut hog = Command::new("python3")
        .arg("-c")
        .arg("import threading,time\n[threading.Thread(target=time.sleep,args=(60,),daemon=True).start() for _ in range(7)]\nprint('ready',flush=True)\ntime.sleep(60)")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let threaded = hog.id();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(hog.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let tasks = std::fs::read_dir(format!("/proc/{threaded}/task"))
        .unwrap()
        .count();
    assert_eq!(tasks, 8, "the victim has 8 threads");
    hog.kill().unwrap();
    hog.wait().unwrap();
    settle(&agent, threaded, 1);
    settle(&agent, three, 1);
    let done = agent.stop();
    let e3 = for_pid(&done.events, three);
    assert_eq!(e3.len(), 1, "{e3:#?}");
    assert_eq!(e3[0]["type"], "kernel.process.abnormal_exit");
    assert_eq!(e3[0]["facts"]["exit_code"], 3);
    assert_eq!(e3[0]["facts"]["signal"], 0);
    assert_eq!(e3[0]["facts"]["comm"], "sh");
    assert!(e3[0]["facts"]["cgroup_id"].as_u64().unwrap() > 0);
    assert_eq!(
        for_pid(&done.events, zero).len(),
        0,
        "exit 0 is not abnormal"
    );
    let ek = for_pid(&done.events, threaded);
    assert_eq!(ek.len(), 1, "one event for 8 threads: {ek:#?}");
    assert_eq!(ek[0]["facts"]["signal"], 9);
    assert_eq!(ek[0]["facts"]["comm"], "python3");
    assert_accounting(&done.metrics, "process");
}

#[test]
fn ignored_exit_codes_are_not_emitted() {
    if !kernel_available("process::ignore") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tmpdir("ignore-cfg");
    let mut cfg = tapio_wire::CompiledConfig::standalone_default();
    cfg.process.ignore_exit_codes = vec![42];
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let agent = Agent::start("ignore", &["--config", path.to_str().unwrap()]);
    agent.wait_log("observer process attached", Duration::from_secs(10));
    let ignored = run_exit(42);
    let reported = run_exit(43);
    settle(&agent, reported, 1);
    let done = agent.stop();
    assert_eq!(for_pid(&done.events, ignored).len(), 0);
    let r = for_pid(&done.events, reported);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["facts"]["exit_code"], 43);
    assert_accounting(&done.metrics, "process");
}

fn inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn an_oom_kill_is_one_event_with_the_victims_cgroups() {
    if !kernel_available("process::oom") {
        return;
    }
    let v1 = "/sys/fs/cgroup/memory";
    let v2 = "/sys/fs/cgroup/unified";
    if !std::path::Path::new(v1)
        .join("memory.limit_in_bytes")
        .exists()
        || !std::path::Path::new(v2).exists()
    {
        skip(
            "process::oom",
            "needs the cgroup v1 memory controller and cgroup v2 mounted",
        );
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = format!("tapio-oom-{}", std::process::id());
    let mem = format!("{v1}/{name}");
    let uni = format!("{v2}/{name}");
    let _ = std::fs::remove_dir(&mem);
    let _ = std::fs::remove_dir(&uni);
    std::fs::create_dir(&mem).unwrap();
    std::fs::create_dir(&uni).unwrap();
    std::fs::write(format!("{mem}/memory.limit_in_bytes"), "64M").unwrap();
    let (uni_id, mem_id) = (inode(&uni), inode(&mem));
    let agent = Agent::start("oom", &[]);
    agent.wait_log("observer process attached", Duration::from_secs(10));
    // The hog joins both cgroups itself, then allocates until killed.
    let mut hog = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {mem}/cgroup.procs && echo $$ > {uni}/cgroup.procs && exec python3 -c 'a=[]\nwhile True: a.append(bytearray(1<<20))'"
        ))
        .spawn()
        .unwrap();
    let pid = hog.id();
    let st = hog.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "the OOM killer killed the hog");
    settle(&agent, pid, 1);
    let done = agent.stop();
    let evs = for_pid(&done.events, pid);
    let _ = std::fs::remove_dir(&mem);
    let _ = std::fs::remove_dir(&uni);
    assert_eq!(evs.len(), 1, "one death, one event: {evs:#?}");
    let f = &evs[0]["facts"];
    assert_eq!(evs[0]["type"], "kernel.process.oom_kill");
    assert_eq!(evs[0]["severity"], "critical");
    assert_eq!(f["comm"], "python3");
    assert_eq!(
        f["cgroup_id"].as_u64(),
        Some(uni_id),
        "the victim's cgroup v2 id"
    );
    assert_eq!(
        f["memcg_id"].as_u64(),
        Some(mem_id),
        "the victim's memory cgroup"
    );
    assert!(
        f["rss_kb"].as_u64().unwrap() > 32 * 1024,
        "rss near the 64M limit: {f}"
    );
    assert!(f["total_vm_kb"].as_u64().unwrap() >= f["rss_kb"].as_u64().unwrap());
    assert_eq!(
        metric(&done.metrics, "tapio_process_exits_folded_into_oom_total"),
        1
    );
    assert_accounting(&done.metrics, "process");
}
