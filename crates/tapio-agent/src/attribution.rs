//! Workload attribution with no API server: the cgroup id the kernel
//! reports becomes its cgroup v2 path, and the path becomes facts (pod UID,
//! container id, QoS class, systemd unit), because kubelet, the container
//! runtimes and systemd name their cgroups after exactly these.
//!
//! A fact that the path does not state unambiguously is left out: a
//! malformed pod UID, a container id that is not 64 hex digits, a pod
//! nested in a pod all yield no Kubernetes facts, never a guess.
//!
//! The id -> path map comes from a walk of the cgroup v2 hierarchy. cgroup
//! ids are kernfs node ids, 64-bit and never reused on 64-bit kernels, so a
//! cached path cannot belong to another cgroup later. A miss triggers a new
//! walk, at most every [`RESCAN_MIN`]; the map is bounded by [`MAX_CGROUPS`].
//! kernfs hands ids out in increasing order, so an id above every id the
//! last walk saw is a cgroup made since: its miss walks again after only
//! [`RESCAN_NEWER_MIN`], or a cgroup made just after a walk would stay
//! unresolved for its first events.

use crate::event::Workload;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// At most this many cgroups are mapped (a walk stops there, counted).
pub use tapio_wire::limits::MAX_CGROUPS;
/// Deepest directory level a walk descends to.
const MAX_DEPTH: usize = 32;
/// Shortest time between two walks triggered by misses.
pub const RESCAN_MIN: Duration = Duration::from_millis(100);
/// Shortest time between two walks for ids newer than the last walk.
pub const RESCAN_NEWER_MIN: Duration = Duration::from_millis(5);

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A pod UID as kubelet spells it in a cgroup name (`sep` is `-` for the
/// cgroupfs driver, `_` for systemd's), returned with dashes.
fn pod_uid(s: &str, sep: u8) -> Option<Box<str>> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != sep {
                return None;
            }
            out.push('-');
        } else if c.is_ascii_digit() || (b'a'..=b'f').contains(&c) {
            out.push(char::from(c));
        } else {
            return None;
        }
    }
    Some(out.into_boxed_str())
}

/// A container runtime's scope or directory name: the container id.
fn container_id(seg: &str) -> Option<Box<str>> {
    let id = seg
        .strip_prefix("cri-containerd-")
        .and_then(|r| r.strip_suffix(".scope"))
        .or_else(|| {
            // CRI-O's conmon monitor scope is not the container.
            (!seg.starts_with("crio-conmon-"))
                .then(|| seg.strip_prefix("crio-"))
                .flatten()
                .map(|r| r.strip_suffix(".scope").unwrap_or(r))
        })
        .or_else(|| {
            seg.strip_prefix("docker-")
                .and_then(|r| r.strip_suffix(".scope"))
        })
        .unwrap_or(seg);
    is_hex(id, 64).then(|| id.into())
}

/// The pod segment of either driver: (qos from the segment, uid).
fn pod_segment(seg: &str, systemd: bool) -> Option<(Option<&'static str>, Box<str>)> {
    if systemd {
        let name = seg.strip_suffix(".slice")?;
        for (prefix, qos) in [
            ("kubepods-burstable-pod", Some("burstable")),
            ("kubepods-besteffort-pod", Some("besteffort")),
            ("kubepods-pod", None),
        ] {
            if let Some(uid) = name.strip_prefix(prefix) {
                return pod_uid(uid, b'_').map(|u| (qos, u));
            }
        }
        None
    } else {
        seg.strip_prefix("pod")
            .and_then(|u| pod_uid(u, b'-'))
            .map(|u| (None, u))
    }
}

fn looks_like_pod(seg: &str) -> bool {
    pod_segment(seg, true).is_some() || pod_segment(seg, false).is_some()
}

/// The facts a cgroup path states, rendered for the event line. `path` is
/// relative to the v2 mount and starts with `/`.
pub fn parse(path: &str) -> Workload {
    facts(path).seal()
}

fn facts(path: &str) -> Workload {
    let mut w = Workload {
        cgroup_path: path.into(),
        ..Workload::default()
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let roots: Vec<usize> = segs
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == "kubepods.slice" || **s == "kubepods")
        .map(|(i, _)| i)
        .collect();
    if let [root] = roots[..] {
        kubernetes(&segs[root..], &mut w);
        return w;
    }
    if !roots.is_empty() {
        return w; // more than one kubepods root: nested, no facts
    }
    w.systemd_unit = segs
        .iter()
        .rev()
        .find(|s| s.ends_with(".service") && s.len() > ".service".len())
        .map(|s| (*s).into());
    // A container outside Kubernetes (docker run under systemd).
    w.container_id = segs
        .iter()
        .rev()
        .find(|s| s.ends_with(".scope"))
        .and_then(|s| container_id(s));
    w
}

/// `segs[0]` is the kubepods root.
fn kubernetes(segs: &[&str], w: &mut Workload) {
    let systemd = segs[0] == "kubepods.slice";
    let (qos_seg, pod_at) = match (segs.get(1), systemd) {
        (Some(&"kubepods-burstable.slice"), true) | (Some(&"burstable"), false) => {
            (Some("burstable"), 2)
        }
        (Some(&"kubepods-besteffort.slice"), true) | (Some(&"besteffort"), false) => {
            (Some("besteffort"), 2)
        }
        _ => (None, 1),
    };
    let Some((seg_qos, uid)) = segs.get(pod_at).and_then(|s| pod_segment(s, systemd)) else {
        return;
    };
    // The systemd pod slice repeats the QoS class; it must agree.
    if systemd && seg_qos != qos_seg {
        return;
    }
    let below = &segs[pod_at + 1..];
    if below.iter().any(|s| looks_like_pod(s)) {
        return; // a pod inside a pod: no facts
    }
    w.pod_uid = Some(uid);
    w.qos_class = Some(qos_seg.unwrap_or("guaranteed"));
    w.container_id = below.first().and_then(|s| container_id(s));
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn detect_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        // ... mount_point ... - fstype source options
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup v1 memory controller's mount, on hybrid hosts (where an OOM
/// victim's memory cgroup is not its v2 cgroup).
pub fn detect_v1_memory_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        if r.next()? != "cgroup" {
            return None;
        }
        let opts = r.nth(1)?;
        opts.split(',')
            .any(|o| o == "memory")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// Resolution counters: written by the resolver (poller thread), read by
/// the metrics writer; one copy, shared.
#[derive(Debug, Default)]
pub struct Stats {
    pub resolved: AtomicU64,
    pub unresolved: AtomicU64,
    pub walks: AtomicU64,
    pub truncated_walks: AtomicU64,
}

/// A map keyed by cgroup id, looked up once per event: ids are kernel
/// inode numbers, not input an attacker picks freely, so a multiplicative
/// hash replaces SipHash (measured: SipHash was 3 % of the agent's CPU in
/// the connect storm).
type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing, folded: both the high bits (the table's
        // control bytes) and the low bits (its bucket index) depend on
        // every bit of the id.
        let x = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

/// Adds the owner's workload facts to events: the cgroup v2 resolver and,
/// on hybrid hosts, the v1 memory hierarchy's (OOM victims' memcg). Owned
/// by the sender thread, which also drops the events: a workload's
/// reference count is never written from two threads.
pub struct Attributor {
    v2: Resolver,
    /// Its counts are not exported: an OOM event is already counted once,
    /// by its v2 cgroup's resolution.
    memcg: Resolver,
}

impl Attributor {
    /// `root` is the cgroup v2 mount (None: attribution off).
    pub fn new(root: Option<PathBuf>, stats: Arc<Stats>) -> Attributor {
        let v1_memory = root.as_ref().and_then(|_| detect_v1_memory_root());
        Attributor {
            v2: Resolver::new(root, stats),
            memcg: Resolver::new(v1_memory, Arc::default()),
        }
    }

    /// Adds the owner's workload facts (network and process events).
    pub fn attribute(&mut self, ev: &mut crate::event::Event) {
        let (id, memcg) = ev.facts.cgroups();
        let Some(id) = id else {
            return;
        };
        ev.workload = self.v2.resolve(id);
        // On a v2-only host the memory cgroup is the v2 cgroup itself.
        if let Some(m) = memcg.filter(|m| *m != id) {
            ev.memcg = self.memcg.resolve(m);
        }
    }
}

/// The cgroup id -> workload map, owned by the sender thread.
pub struct Resolver {
    root: Option<PathBuf>,
    map: IdMap<Arc<Workload>>,
    last_walk: Option<Instant>,
    /// The largest id any walk saw.
    newest: u64,
    stats: Arc<Stats>,
}

impl Resolver {
    /// `root` is the cgroup v2 mount (None: attribution off); `stats` is
    /// where it counts.
    pub fn new(root: Option<PathBuf>, stats: Arc<Stats>) -> Resolver {
        Resolver {
            root,
            map: IdMap::default(),
            last_walk: None,
            newest: 0,
            stats,
        }
    }

    /// The workload of cgroup `id`, when its path is known.
    pub fn resolve(&mut self, id: u64) -> Option<Arc<Workload>> {
        self.root.as_ref()?;
        let mut w = self.map.get(&id).map(Arc::clone);
        let min = if id > self.newest {
            RESCAN_NEWER_MIN
        } else {
            RESCAN_MIN
        };
        if w.is_none() && self.last_walk.is_none_or(|t| t.elapsed() >= min) {
            self.walk();
            w = self.map.get(&id).map(Arc::clone);
        }
        let counter = if w.is_some() {
            &self.stats.resolved
        } else {
            &self.stats.unresolved
        };
        counter.fetch_add(1, Relaxed);
        w
    }

    /// Maps every cgroup that exists now, reusing the entries whose path
    /// did not change. Cgroups that are gone are dropped.
    fn walk(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(root) = self.root.clone() else {
            return;
        };
        self.last_walk = Some(Instant::now());
        self.stats.walks.fetch_add(1, Relaxed);
        let mut next: IdMap<Arc<Workload>> =
            IdMap::with_capacity_and_hasher(self.map.len() + 16, Default::default());
        let mut stack: Vec<(PathBuf, String, usize)> = vec![(root, String::from("/"), 0)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            if next.len() >= MAX_CGROUPS {
                self.stats.truncated_walks.fetch_add(1, Relaxed);
                break;
            }
            let id = meta.ino();
            self.newest = self.newest.max(id);
            let w = match self.map.get(&id) {
                Some(w) if *w.cgroup_path == *rel => Arc::clone(w),
                _ => Arc::new(parse(&rel)),
            };
            next.insert(id, w);
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue; // not UTF-8: no facts we could state
                };
                let child = if rel == "/" {
                    format!("/{name}")
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((e.path(), child, depth + 1));
            }
        }
        self.map = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6b3d5a2e-1f4c-4e8a-9b7d-0c2e4f6a8b1d";
    const UID_: &str = "6b3d5a2e_1f4c_4e8a_9b7d_0c2e4f6a8b1d";
    const CID: &str = "3f9e1c7b2a4d6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e1f";

    fn k8s(p: &str) -> (Option<String>, Option<String>, Option<&'static str>) {
        let w = parse(p);
        assert_eq!(&*w.cgroup_path, p);
        (
            w.pod_uid.map(String::from),
            w.container_id.map(String::from),
            w.qos_class,
        )
    }

    #[test]
    fn systemd_driver_every_qos_and_runtime() {
        let want = |qos| (Some(UID.to_string()), Some(CID.to_string()), Some(qos));
        assert_eq!(
            k8s(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope"
            )),
            want("burstable")
        );
        assert_eq!(
            k8s(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope"
            )),
            want("besteffort")
        );
        assert_eq!(
            k8s(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope"
            )),
            want("guaranteed")
        );
        // The pod's own cgroup (no container yet): pod facts only.
        assert_eq!(
            k8s(&format!("/kubepods.slice/kubepods-pod{UID_}.slice")),
            (Some(UID.to_string()), None, Some("guaranteed"))
        );
        // CRI-O's conmon scope is in the pod, but is not the container.
        assert_eq!(
            k8s(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope"
            )),
            (Some(UID.to_string()), None, Some("guaranteed"))
        );
        // Below the container (an init.scope inside it): still that container.
        assert_eq!(
            k8s(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope/init.scope"
            )),
            want("guaranteed")
        );
    }

    #[test]
    fn cgroupfs_driver_every_qos() {
        let want = |qos| (Some(UID.to_string()), Some(CID.to_string()), Some(qos));
        assert_eq!(
            k8s(&format!("/kubepods/burstable/pod{UID}/{CID}")),
            want("burstable")
        );
        assert_eq!(
            k8s(&format!("/kubepods/besteffort/pod{UID}/{CID}")),
            want("besteffort")
        );
        assert_eq!(
            k8s(&format!("/kubepods/pod{UID}/{CID}")),
            want("guaranteed")
        );
        assert_eq!(
            k8s(&format!("/kubepods/pod{UID}/crio-{CID}")),
            want("guaranteed")
        );
    }

    #[test]
    fn bad_shapes_yield_no_facts_never_wrong_ones() {
        let none = (None, None, None);
        for bad in [
            // truncated or wrong-length ids
            format!("/kubepods/pod{}/{CID}", &UID[..35]),
            format!("/kubepods.slice/kubepods-pod{}.slice", &UID_[1..]),
            // the systemd driver's separator in a cgroupfs path and back
            format!("/kubepods/pod{UID_}/{CID}"),
            format!("/kubepods.slice/kubepods-pod{UID}.slice"),
            // upper case is not how kubelet writes a UID
            format!("/kubepods/pod{}/{CID}", UID.to_uppercase()),
            // a pod inside a pod
            format!("/kubepods/pod{UID}/pod{UID}/{CID}"),
            format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/kubepods.slice/kubepods-pod{UID_}.slice"
            ),
            // the QoS of the slice and of the pod disagree
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{UID_}.slice"),
            // a QoS level with no pod
            "/kubepods.slice/kubepods-burstable.slice".to_string(),
            "/kubepods".to_string(),
        ] {
            assert_eq!(k8s(&bad), none, "{bad}");
        }
        // A container id of the wrong length is left out, the pod stays.
        assert_eq!(
            k8s(&format!("/kubepods/pod{UID}/{}", &CID[..63])),
            (Some(UID.to_string()), None, Some("guaranteed"))
        );
        assert_eq!(
            k8s(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{}x.scope",
                &CID[..63]
            )),
            (Some(UID.to_string()), None, Some("guaranteed"))
        );
    }

    #[test]
    fn services_outside_kubernetes() {
        let w = parse("/system.slice/nginx.service");
        assert_eq!(w.systemd_unit.as_deref(), Some("nginx.service"));
        assert_eq!(w.pod_uid, None);
        let w = parse("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service");
        assert_eq!(w.systemd_unit.as_deref(), Some("foo.service"));
        let w = parse(&format!("/system.slice/docker-{CID}.scope"));
        assert_eq!(w.container_id.as_deref(), Some(CID));
        assert_eq!(w.systemd_unit, None);
        let w = parse("/");
        assert_eq!((&*w.cgroup_path, w.systemd_unit), ("/", None));
    }

    #[test]
    fn resolver_maps_real_directories_and_misses_unknown_ids() {
        let dir = std::env::temp_dir().join(format!("tapio-attr-{}", std::process::id()));
        let leaf = dir.join(format!("kubepods/burstable/pod{UID}/{CID}"));
        std::fs::create_dir_all(&leaf).unwrap();
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::metadata(&leaf).unwrap().ino();
        let stats = Arc::new(Stats::default());
        let mut r = Resolver::new(Some(dir.clone()), Arc::clone(&stats));
        let w = r.resolve(id).expect("resolved");
        assert_eq!(
            &*w.cgroup_path,
            format!("/kubepods/burstable/pod{UID}/{CID}")
        );
        assert_eq!(w.qos_class, Some("burstable"));
        // a hit shares the same facts
        assert!(Arc::ptr_eq(&w, &r.resolve(id).unwrap()));
        // an unknown id older than the walk (kernfs ids increase)
        assert_eq!(r.resolve(1), None);
        let load = |c: &AtomicU64| c.load(Relaxed);
        assert_eq!(
            (
                load(&stats.resolved),
                load(&stats.unresolved),
                load(&stats.truncated_walks)
            ),
            (2, 1, 0)
        );
        // one walk for the first id; none for the hit, and none for the
        // unknown older id, which came within RESCAN_MIN of it
        assert_eq!(load(&stats.walks), 1);
        // a cgroup made after the walk has a larger id: it walks again
        // once RESCAN_NEWER_MIN has passed, not RESCAN_MIN
        let newer = dir.join("kubepods/newer");
        std::fs::create_dir_all(&newer).unwrap();
        let newer_id = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&newer).unwrap().ino()
        };
        if newer_id > id {
            std::thread::sleep(RESCAN_NEWER_MIN);
            assert!(r.resolve(newer_id).is_some());
            assert_eq!(load(&stats.walks), 2);
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Resolver::new(None, Arc::default()).resolve(id), None);
    }
}
