//! `tapio-agent check`: the feasibility probe an operator runs first on a
//! new host.
//!
//! Every requirement is one line: `pass`, `fail` or `unknown`, with what
//! was seen and, when it is not a pass, how to fix it. An error the probe
//! cannot interpret is `unknown`, never a guessed pass. Nothing is left
//! loaded or pinned: test maps are closed at once, and each observer is
//! loaded, attached and dropped again (its programs see no config, so they
//! emit nothing during that moment).

use crate::observers::{NAMES as OBSERVER_NAMES, OBSERVERS};
use serde_json::{Value, json};
use std::os::fd::{FromRawFd, OwnedFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub required: bool,
    pub status: Status,
    pub detail: String,
    pub fix: String,
}

fn check(
    name: &str,
    required: bool,
    status: Status,
    detail: impl Into<String>,
    fix: &str,
) -> Check {
    Check {
        name: name.into(),
        required,
        status,
        detail: detail.into(),
        fix: if status == Status::Pass {
            String::new()
        } else {
            fix.into()
        },
    }
}

/// Parses `major.minor` of a kernel release string.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The oldest kernel the VM matrix (`make test-kernels`) proved exact
/// with every observer: Debian 11's 5.10. Ring buffers need 5.8; 5.8 and
/// 5.9 may work but nothing here proved it.
pub const MIN_PROVED: (u32, u32) = (5, 10);
const MIN_POSSIBLE: (u32, u32) = (5, 8);

fn probe_kernel() -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let (pm, pn) = MIN_PROVED;
    match kernel_version(release) {
        Some(v) if v >= MIN_PROVED => check(
            "kernel_release",
            true,
            Status::Pass,
            format!("{release} (>= {pm}.{pn}, the oldest kernel the test matrix proved)"),
            "",
        ),
        Some(v) if v >= MIN_POSSIBLE => check(
            "kernel_release",
            true,
            Status::Unknown,
            format!("{release}: older than {pm}.{pn}, the oldest kernel the test matrix proved"),
            "the observer lines below say what loads; a kernel >= 5.10 is proven",
        ),
        Some(_) => check(
            "kernel_release",
            true,
            Status::Fail,
            format!("{release} is older than 5.8"),
            "upgrade to a kernel >= 5.10 with BTF (ring buffers and tp_btf need 5.8)",
        ),
        None => check(
            "kernel_release",
            true,
            Status::Unknown,
            format!("cannot parse {release:?}"),
            "check /proc/sys/kernel/osrelease",
        ),
    }
}

fn probe_btf() -> Check {
    let path = "/sys/kernel/btf/vmlinux";
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => check(
            "btf",
            true,
            Status::Pass,
            format!("{path} ({} bytes)", m.len()),
            "",
        ),
        Ok(_) => check(
            "btf",
            true,
            Status::Fail,
            format!("{path} is empty"),
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => check(
            "btf",
            true,
            Status::Fail,
            format!("{path} missing"),
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 2021)",
        ),
        Err(e) => check(
            "btf",
            true,
            Status::Unknown,
            format!("{path}: {e}"),
            "run as root",
        ),
    }
}

const BPF_MAP_CREATE: libc::c_long = 0;

/// bpf(BPF_MAP_CREATE) for one map type; closes the map at once.
fn create_map(map_type: u32, key: u32, value: u32, max_entries: u32) -> Result<(), std::io::Error> {
    new_map(map_type, key, value, max_entries, None).map(drop)
}

/// bpf(BPF_MAP_CREATE): a new map, with `inner` as the template of its
/// entries (a map of maps).
fn new_map(
    map_type: u32,
    key: u32,
    value: u32,
    max_entries: u32,
    inner: Option<&OwnedFd>,
) -> Result<OwnedFd, std::io::Error> {
    use std::os::fd::AsRawFd;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&map_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&key.to_ne_bytes());
    attr[8..12].copy_from_slice(&value.to_ne_bytes());
    attr[12..16].copy_from_slice(&max_entries.to_ne_bytes());
    if let Some(fd) = inner {
        attr[20..24].copy_from_slice(&fd.as_raw_fd().to_ne_bytes());
    }
    // SAFETY: bpf(2) reads `attr` (a zeroed union bpf_attr prefix of the
    // given size) and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// An array of ring buffers, as every observer keeps its rings (one per
/// CPU, include/tapio_abi.h); closes both at once.
fn create_ring_array(page: u32) -> Result<(), std::io::Error> {
    let ring = new_map(27, 0, 0, page, None)?;
    new_map(12, 4, 4, 1, Some(&ring)).map(drop)
}

fn errno_check(name: &str, what: &str, r: Result<(), std::io::Error>) -> Check {
    match r {
        Ok(()) => check(
            name,
            true,
            Status::Pass,
            format!("{what}: created and closed"),
            "",
        ),
        Err(e) => match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => check(
                name,
                true,
                Status::Fail,
                format!("{what}: {e}"),
                "run as root, or grant CAP_BPF and CAP_PERFMON (check kernel.unprivileged_bpf_disabled and LSM policy)",
            ),
            Some(libc::ENOSYS) => check(
                name,
                true,
                Status::Fail,
                format!("{what}: {e}"),
                "a kernel with CONFIG_BPF_SYSCALL=y",
            ),
            Some(libc::EINVAL) => check(
                name,
                true,
                Status::Fail,
                format!("{what}: {e} (not supported by this kernel)"),
                "a newer kernel (ring buffers need 5.8)",
            ),
            _ => check(
                name,
                true,
                Status::Unknown,
                format!("{what}: {e}"),
                "see the error; rerun as root",
            ),
        },
    }
}

fn probe_maps() -> Vec<Check> {
    let page = {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 { p as u32 } else { 4096 }
    };
    let mut out = vec![errno_check(
        "bpf_syscall",
        "bpf(BPF_MAP_CREATE, array)",
        create_map(2, 4, 4, 1),
    )];
    for (name, ty, k, v, n) in [
        ("map_type:ringbuf", 27u32, 0u32, 0u32, page),
        ("map_type:hash", 1, 8, 8, 1),
        ("map_type:percpu_array", 6, 4, 8, 1),
        ("map_type:array", 2, 4, 4, 1),
    ] {
        out.push(errno_check(
            name,
            name.trim_start_matches("map_type:"),
            create_map(ty, k, v, n),
        ));
    }
    out.push(errno_check(
        "map_type:array_of_maps",
        "array_of_maps of ringbuf",
        create_ring_array(page),
    ));
    out
}

/// Program types. Every Tapio program is `tp_btf` (BPF_PROG_TYPE_TRACING),
/// and libbpf's generic type probe cannot probe that type without an
/// attach target, so the proof is the observers themselves: tracing is
/// supported when an observer's programs loaded and attached. Plain
/// tracepoint programs are probed with libbpf, as information.
fn probe_prog_types(observers: &[Check]) -> Vec<Check> {
    let loaded = observers
        .iter()
        .filter(|c| c.status == Status::Pass)
        .count();
    let tracing = if loaded > 0 {
        check(
            "prog_type:tracing",
            true,
            Status::Pass,
            format!("tp_btf programs: {loaded} observer(s) loaded and attached"),
            "",
        )
    } else {
        check(
            "prog_type:tracing",
            true,
            Status::Fail,
            "tp_btf programs: no observer could load (see the observer lines)",
            "a kernel >= 5.5 with BTF, and CAP_BPF + CAP_PERFMON",
        )
    };
    let tracepoint = match libbpf_rs::ProgramType::Tracepoint.is_supported() {
        Ok(true) => check(
            "prog_type:tracepoint",
            false,
            Status::Pass,
            "tracepoint programs: supported (not used)",
            "",
        ),
        Ok(false) => check(
            "prog_type:tracepoint",
            false,
            Status::Fail,
            "tracepoint programs: the kernel refused a probe program (not used)",
            "only needed for a tracefs fallback",
        ),
        Err(e) => check(
            "prog_type:tracepoint",
            false,
            Status::Unknown,
            format!("probe failed: {e}"),
            "rerun as root",
        ),
    };
    vec![tracing, tracepoint]
}

fn probe_tracepoints(hidden: &[String]) -> Vec<Check> {
    let btf = libbpf_rs::btf::Btf::from_vmlinux();
    let wanted: Vec<(&str, String)> = OBSERVERS
        .iter()
        .flat_map(|spec| {
            (spec.tracepoints)()
                .into_iter()
                .map(move |tp| (spec.wire.as_str(), tp))
        })
        .collect();
    wanted
        .iter()
        .map(|(obs, tp)| {
            let name = format!("tracepoint:{obs}/{tp}");
            let Ok(btf) = &btf else {
                return check(
                    &name,
                    true,
                    Status::Unknown,
                    "kernel BTF not readable",
                    "see the btf line",
                );
            };
            let typedef = format!("btf_trace_{tp}");
            let found = !hidden.iter().any(|h| h == tp)
                && btf
                    .type_by_name::<libbpf_rs::btf::types::Typedef<'_>>(&typedef)
                    .is_some();
            if found {
                check(
                    &name,
                    true,
                    Status::Pass,
                    format!("{typedef} in kernel BTF"),
                    "",
                )
            } else {
                check(
                    &name,
                    true,
                    Status::Fail,
                    format!("{typedef} not in kernel BTF"),
                    "this kernel lacks the tracepoint; the observer will report failed",
                )
            }
        })
        .collect()
}

fn mounted(fstype: &str, at: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, ty) = (f.next(), f.next(), f.next());
            mnt == Some(at) && ty == Some(fstype)
        })
}

fn probe_fs() -> Vec<Check> {
    let bpffs = mounted("bpf", "/sys/fs/bpf");
    let tracefs = mounted("tracefs", "/sys/kernel/tracing")
        || mounted("tracefs", "/sys/kernel/debug/tracing");
    vec![
        check(
            "bpffs",
            false,
            if bpffs { Status::Pass } else { Status::Fail },
            if bpffs {
                "mounted at /sys/fs/bpf"
            } else {
                "not mounted at /sys/fs/bpf (the agent pins nothing, so it is not required)"
            },
            "mount -t bpf bpf /sys/fs/bpf",
        ),
        check(
            "tracefs",
            false,
            if tracefs { Status::Pass } else { Status::Fail },
            if tracefs {
                "mounted"
            } else {
                "not mounted (not required: every program is tp_btf, which needs no tracefs)"
            },
            "mount -t tracefs tracefs /sys/kernel/tracing",
        ),
    ]
}

/// Effective capabilities from /proc/self/status.
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// CAP_BPF + CAP_PERFMON are enough for every observer (proven by
/// tests/capabilities.rs: a non-root uid with exactly these two loads all
/// of them and sees events); CAP_SYS_ADMIN implies both.
pub fn caps_check(eff: Option<u64>) -> Check {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Some(eff) = eff else {
        return check(
            "capabilities",
            true,
            Status::Unknown,
            "cannot read CapEff from /proc/self/status",
            "run as root",
        );
    };
    let has = |c: u32| eff & (1u64 << c) != 0;
    let names: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(c, _)| has(*c))
    .map(|(_, n)| n)
    .collect();
    let detail = format!(
        "effective: {}",
        if names.is_empty() {
            "none of the BPF ones".into()
        } else {
            names.join(", ")
        }
    );
    let ok = (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN);
    check(
        "capabilities",
        true,
        if ok { Status::Pass } else { Status::Fail },
        detail,
        "run as root, or with CAP_BPF and CAP_PERFMON (AmbientCapabilities= in the unit)",
    )
}

fn probe_memlock() -> Check {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let detail = if rc != 0 {
        "cannot read RLIMIT_MEMLOCK".to_string()
    } else if lim.rlim_cur == libc::RLIM_INFINITY {
        "RLIMIT_MEMLOCK unlimited".to_string()
    } else {
        format!(
            "RLIMIT_MEMLOCK {} KiB (kernels >= 5.11 charge BPF memory to the memory cgroup instead)",
            lim.rlim_cur / 1024
        )
    };
    // A note, never a requirement.
    check(
        "memlock",
        false,
        if rc == 0 {
            Status::Pass
        } else {
            Status::Unknown
        },
        detail,
        "LimitMEMLOCK=infinity on kernels < 5.11",
    )
}

fn probe_observers() -> Vec<Check> {
    // Load with a zeroed config: the programs see abi_version 0 and emit
    // nothing while attached; everything is dropped before returning.
    let k = crate::abi::KernelConfig::default();
    crate::loader::probe_each(&k)
        .into_iter()
        .map(|(idx, r)| {
            let name = format!("observer:{}", OBSERVER_NAMES[idx]);
            match r {
                Ok(()) => check(
                    &name,
                    true,
                    Status::Pass,
                    "loaded, verified and attached (then detached)",
                    "",
                ),
                Err(e) => check(
                    &name,
                    true,
                    Status::Fail,
                    e,
                    "see the kernel's reason; a kernel >= 5.10 with BTF",
                ),
            }
        })
        .collect()
}

/// Recursion misses of the tapio programs loaded now (a running agent's):
/// runs the kernel skipped, each of which may have been an event.
fn probe_recursion_misses() -> Check {
    let (mut programs, mut misses) = (0u64, 0u64);
    for p in libbpf_rs::query::ProgInfoIter::default() {
        if p.name.to_string_lossy().starts_with("tapio_") {
            programs += 1;
            misses += p.recursion_misses;
        }
    }
    if misses == 0 {
        check(
            "recursion_misses",
            false,
            Status::Pass,
            format!("0 across {programs} loaded tapio program(s)"),
            "",
        )
    } else {
        check(
            "recursion_misses",
            false,
            Status::Fail,
            format!("{misses} program runs skipped across {programs} loaded tapio program(s)"),
            "see tapio_kernel_recursion_misses_total per program; docs/reliability.md",
        )
    }
}

/// Runs every probe.
pub fn run_all(hidden_tracepoints: &[String]) -> Vec<Check> {
    let mut out = vec![probe_kernel(), probe_btf(), caps_check(effective_caps())];
    out.extend(probe_maps());
    let observers = probe_observers();
    out.extend(probe_prog_types(&observers));
    out.extend(probe_tracepoints(hidden_tracepoints));
    out.push(probe_recursion_misses());
    out.push(check(
        "tracepoint_prototypes",
        false,
        Status::Pass,
        crate::prototypes::Prototypes::of_running_kernel().describe(),
        "",
    ));
    out.extend(probe_fs());
    out.push(probe_memlock());
    out.extend(observers);
    out
}

/// 0 when every required check passes, 1 otherwise.
pub fn exit_code(checks: &[Check]) -> i32 {
    i32::from(
        checks
            .iter()
            .any(|c| c.required && c.status != Status::Pass),
    )
}

pub fn to_json(checks: &[Check]) -> Value {
    json!({
        "ok": exit_code(checks) == 0,
        "checks": checks.iter().map(|c| json!({
            "name": c.name,
            "required": c.required,
            "status": c.status.as_str(),
            "detail": c.detail,
            "fix": c.fix,
        })).collect::<Vec<_>>(),
    })
}

pub fn to_table(checks: &[Check]) -> String {
    let w = checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "{:<w$}  {:<7}  {:<8}  DETAIL\n",
        "CHECK", "STATUS", "REQUIRED"
    );
    for c in checks {
        s.push_str(&format!(
            "{:<w$}  {:<7}  {:<8}  {}\n",
            c.name,
            c.status.as_str(),
            if c.required { "yes" } else { "no" },
            c.detail
        ));
        if !c.fix.is_empty() {
            s.push_str(&format!(
                "{:<w$}  {:<7}  {:<8}  fix: {}\n",
                "", "", "", c.fix
            ));
        }
    }
    let failing = checks
        .iter()
        .filter(|c| c.required && c.status != Status::Pass)
        .count();
    s.push_str(&if failing == 0 {
        "result: all required checks pass\n".to_string()
    } else {
        format!("result: {failing} required check(s) did not pass\n")
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.8.0"), Some((5, 8)));
        assert_eq!(kernel_version("garbage"), None);
    }

    #[test]
    fn capabilities_need_bpf_and_perfmon_or_sys_admin() {
        let bit = |c: u32| 1u64 << c;
        assert_eq!(caps_check(Some(bit(39) | bit(38))).status, Status::Pass);
        assert_eq!(caps_check(Some(bit(21))).status, Status::Pass);
        let c = caps_check(Some(bit(39) | bit(12)));
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.contains("CAP_PERFMON"));
        assert_eq!(caps_check(Some(0)).status, Status::Fail);
        assert_eq!(caps_check(None).status, Status::Unknown);
    }

    #[test]
    fn unknown_is_never_a_pass_for_the_exit_code() {
        let mk = |s, r| check("x", r, s, "", "fix");
        assert_eq!(
            exit_code(&[mk(Status::Pass, true), mk(Status::Fail, false)]),
            0
        );
        assert_eq!(
            exit_code(&[mk(Status::Pass, true), mk(Status::Unknown, true)]),
            1
        );
        assert_eq!(exit_code(&[mk(Status::Fail, true)]), 1);
        let v = to_json(&[mk(Status::Unknown, true)]);
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][0]["status"], "unknown");
        assert_eq!(v["checks"][0]["fix"], "fix");
    }
}
