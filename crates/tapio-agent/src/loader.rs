//! Opening, loading and attaching the BPF objects, one per observer.
//!
//! An observer that fails to load or attach is logged with the kernel's
//! reason and reported `failed`; the others go on. The initial
//! `tapio_config` is written between load and attach, so the first record
//! already carries a generation.

use crate::abi::{KernelConfig, counter};
use crate::observers::OBSERVERS;
use crate::prototypes::Prototypes;
use libbpf_rs::{MapCore, MapFlags, MapHandle, OpenObject};
use std::mem::MaybeUninit;

/// A loaded, attached observer object.
pub struct Observer {
    /// Its row in `crate::observers::OBSERVERS`.
    pub index: usize,
    /// The skeleton, whatever its type: it holds the links (attachments).
    /// Dropping it detaches every program; the handles below stay valid.
    pub skel: Option<Box<dyn Send>>,
    /// Its ring buffers, one per possible CPU (owned handles).
    pub rings: Vec<MapHandle>,
    /// Each loaded program's name and an owned fd (for its run counters:
    /// recursion misses), until `ProgramReaders` takes them.
    pub programs: Vec<(String, std::os::fd::OwnedFd)>,
    /// Its config slots, mapped once at load (the initial config is
    /// written through them), until `ConfigWriters` takes them.
    pub config: Option<crate::config::ConfigSlots>,
    /// An owned handle (a dup'ed fd): usable from any thread and after
    /// the skeleton is gone.
    pub counters_map: MapHandle,
    /// Its `tapio_consumer` flag, mapped at load, until the poller takes it.
    pub consumer: Option<crate::poller::ConsumerFlag>,
}

impl Observer {
    /// Detaches every program (drops the skeleton and with it the links).
    pub fn detach(&mut self) {
        self.skel = None;
    }
}

/// Writes config into every loaded object (`crate::config::ConfigSlots`),
/// one writer at a time.
#[derive(Default)]
pub struct ConfigWriters(std::sync::Mutex<Vec<crate::config::ConfigSlots>>);

impl ConfigWriters {
    /// Takes each observer's config slots (they serve nothing else).
    pub fn from_observers(observers: &mut [Observer]) -> ConfigWriters {
        ConfigWriters(std::sync::Mutex::new(
            observers
                .iter_mut()
                .filter_map(|o| o.config.take())
                .collect(),
        ))
    }

    /// Writes `k` to all objects; returns how many writes failed: none,
    /// since each is a store into memory mapped at load (a mapping that
    /// failed failed the observer's load).
    pub fn write(&self, k: &KernelConfig) -> usize {
        let mut slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.iter_mut() {
            s.write(k, slow_write_pause);
        }
        0
    }
}

/// Test hook (crate::fault) `config:slow_write:<ms>`: a config write pauses
/// halfway, so a test can prove that no program keeps a half-written one.
fn slow_write_pause() {
    for ms in crate::fault::values("config:slow_write:") {
        if let Ok(ms) = ms.parse::<u64>() {
            std::thread::sleep(std::time::Duration::from_millis(ms.min(5_000)));
        }
    }
}

/// Per-CPU counter readers, one per loaded object.
#[derive(Default)]
pub struct CounterReaders(pub Vec<(usize, MapHandle)>);

impl CounterReaders {
    pub fn from_observers(observers: &[Observer]) -> CounterReaders {
        CounterReaders(
            observers
                .iter()
                .filter_map(|o| {
                    MapHandle::try_from(&o.counters_map)
                        .ok()
                        .map(|m| (o.index, m))
                })
                .collect(),
        )
    }

    /// Sums every counter over CPUs. A failed read leaves the previous
    /// value (counters are monotonic, so a stale value is never too high).
    pub fn read_into(&self, k: &mut crate::metrics::KernelCounters) {
        for (obs, map) in &self.0 {
            for idx in 0..counter::MAX {
                let key = idx.to_ne_bytes();
                let Ok(Some(per_cpu)) = map.lookup_percpu(&key, MapFlags::ANY) else {
                    continue;
                };
                let sum: u64 = per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                    .map(u64::from_ne_bytes)
                    .fold(0u64, u64::wrapping_add);
                k.0[*obs][idx as usize] = sum;
            }
        }
    }
}

pub fn storage() -> &'static mut MaybeUninit<OpenObject> {
    // One small allocation per observer for the process lifetime: it gives
    // the skeleton a 'static borrow, so it can move to the poller thread.
    Box::leak(Box::new(MaybeUninit::uninit()))
}

fn libbpf_print(level: libbpf_rs::PrintLevel, msg: String) {
    use libbpf_rs::PrintLevel;
    let msg = msg.trim_end();
    match level {
        PrintLevel::Warn => log::warn!("libbpf: {msg}"),
        PrintLevel::Info => log::info!("libbpf: {msg}"),
        PrintLevel::Debug => log::debug!("libbpf: {msg}"),
    }
}

/// libbpf's own messages through the agent's logger (escaped, levelled),
/// not raw onto stderr.
pub fn route_libbpf_log() {
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, libbpf_print)));
}

/// Turns autoload off for the program variants this kernel cannot run
/// (crate::prototypes). A name that is not in the object is a build
/// mismatch, and fails the load.
pub fn choose_variants(obj: &mut OpenObject, choices: &[(&str, bool)]) -> libbpf_rs::Result<()> {
    for (name, load) in choices {
        let mut found = false;
        for mut p in obj.progs_mut() {
            if p.name() == *name {
                p.set_autoload(*load);
                found = true;
            }
        }
        if !found {
            return Err(libbpf_rs::Error::from(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("program {name} is not in the object"),
            )));
        }
    }
    Ok(())
}

/// The programs that were loaded (autoload on), with dup'ed fds.
pub fn loaded_programs(
    obj: &libbpf_rs::Object,
) -> libbpf_rs::Result<Vec<(String, std::os::fd::OwnedFd)>> {
    use std::os::fd::AsFd;
    let mut out = Vec::new();
    for p in obj.progs() {
        if !p.autoload() {
            continue;
        }
        let fd = p
            .as_fd()
            .try_clone_to_owned()
            .map_err(libbpf_rs::Error::from)?;
        out.push((p.name().to_string_lossy().into_owned(), fd));
    }
    Ok(out)
}

/// Per-program run statistics the kernel keeps: (observer, program,
/// recursion misses). A tracing program that fires while it is already
/// running on the same CPU (a softirq over process context) is skipped
/// and counted only here: a run that may have been an event.
#[derive(Default)]
pub struct ProgramReaders(pub Vec<(usize, String, std::os::fd::OwnedFd)>);

impl ProgramReaders {
    /// Takes each observer's program fds (they serve nothing else).
    pub fn from_observers(observers: &mut [Observer]) -> ProgramReaders {
        ProgramReaders(
            observers
                .iter_mut()
                .flat_map(|o| {
                    let index = o.index;
                    std::mem::take(&mut o.programs)
                        .into_iter()
                        .map(move |(name, fd)| (index, name, fd))
                })
                .collect(),
        )
    }

    /// (observer, program, recursion misses) now; a failed read is left
    /// out (the previous value stays in the metrics).
    pub fn read(&self) -> Vec<(usize, String, u64)> {
        self.0
            .iter()
            .filter_map(|(obs, name, fd)| {
                use std::os::fd::AsRawFd;
                let mut info = libbpf_sys::bpf_prog_info::default();
                let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
                // SAFETY: the kernel writes at most `len` bytes into `info`,
                // which we own; every pointer field is zero (not requested).
                let ret = unsafe {
                    libbpf_sys::bpf_obj_get_info_by_fd(
                        fd.as_raw_fd(),
                        (&mut info as *mut libbpf_sys::bpf_prog_info).cast(),
                        &mut len,
                    )
                };
                (ret == 0).then(|| (*obs, name.clone(), info.recursion_misses))
            })
            .collect()
    }
}

/// An observer's ring buffers, before they are in its `events` array
/// (include/tapio_abi.h).
pub struct Rings {
    /// The distinct rings.
    pub rings: Vec<MapHandle>,
    /// The bytes of each.
    pub bytes: u32,
    /// The possible CPUs: CPU c emits into ring c % rings.
    cpus: usize,
}

impl Rings {
    /// Creates the rings of observer `index` ([`ring_layout`]). Test
    /// hooks (crate::fault): `<observer>:ring_bytes:<n>`, rings of n bytes
    /// (a power of two, at least a page); `<observer>:rings:<n>`, n rings
    /// (1 to the CPUs), so that CPUs share them as on a large host.
    pub fn create(index: usize) -> libbpf_rs::Result<Rings> {
        let spec = &OBSERVERS[index];
        let name = spec.wire.as_str();
        let cpus = libbpf_rs::num_possible_cpus()?;
        let (mut count, mut bytes) = ring_layout(spec.ring_bytes, cpus);
        if crate::fault::COMPILED {
            let hook = |what: &str| {
                crate::fault::values(&format!("{name}:{what}:"))
                    .iter()
                    .find_map(|n| n.parse::<u32>().ok())
            };
            bytes = hook("ring_bytes").unwrap_or(bytes);
            count = hook("rings").map_or(count, |n| (n as usize).clamp(1, cpus));
        }
        log::info!(
            "observer {name}: {count} ring(s) of {} KiB for {cpus} CPU(s)",
            bytes / 1024
        );
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let mut rings = Vec::with_capacity(count);
        for _ in 0..count {
            let ring = MapHandle::create(
                libbpf_rs::MapType::RingBuf,
                Some("tapio_ring"),
                0,
                0,
                bytes,
                &opts,
            )?;
            rings.push(ring);
        }
        Ok(Rings { rings, bytes, cpus })
    }

    /// Sizes the opened object's `events` array to the CPUs, with the
    /// first ring as the template of its entries.
    pub fn prepare(&self, obj: &mut OpenObject) -> libbpf_rs::Result<()> {
        use std::os::fd::AsFd;
        let first = self.rings.first().ok_or_else(|| no("ring to make"))?;
        let mut events = obj
            .maps_mut()
            .find(|m| m.name() == "events")
            .ok_or_else(|| no("map events"))?;
        events.set_max_entries(self.cpus as u32)?;
        events.set_inner_map_fd(first.as_fd())
    }

    /// Fills every CPU's entry of the loaded `events` array.
    pub fn insert(&self, events: &dyn MapCore) -> libbpf_rs::Result<()> {
        use std::os::fd::{AsFd, AsRawFd};
        for cpu in 0..self.cpus {
            let ring = &self.rings[cpu % self.rings.len()];
            let key = (cpu as u32).to_ne_bytes();
            let fd = ring.as_fd().as_raw_fd().to_ne_bytes();
            events.update(&key, &fd, MapFlags::ANY)?;
        }
        Ok(())
    }
}

fn no(what: &str) -> libbpf_rs::Error {
    libbpf_rs::Error::from(std::io::Error::other(format!("no {what}")))
}

/// Observer `index` from its loaded object, set up before its programs
/// are attached: its rings in place, its first config written. The caller
/// attaches, then gives it the skeleton and the loaded programs. One
/// function for every observer, not a copy per skeleton type.
pub fn loaded(
    index: usize,
    obj: &libbpf_rs::Object,
    rings: Rings,
    k: &KernelConfig,
) -> libbpf_rs::Result<Observer> {
    let map = |name: &str| {
        obj.maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| no(name))
    };
    let counters_map = MapHandle::try_from(&map("tapio_counters")?)?;
    rings.insert(&map("events")?)?;
    // The first config, before the programs are attached.
    let mut config = crate::config::ConfigSlots::open(
        &map("tapio_config")?,
        &map("tapio_config_active")?,
        rings.bytes,
    )?;
    config.write(k, || {});
    let consumer = crate::poller::ConsumerFlag::open(&map("tapio_consumer")?)?;
    Ok(Observer {
        index,
        skel: None,
        rings: rings.rings,
        programs: Vec::new(),
        config: Some(config),
        counters_map,
        consumer: Some(consumer),
    })
}

/// How an observer's `total` ring bytes are laid out on `cpus` possible
/// CPUs: (rings, bytes of each). One ring per CPU, each a power of two at
/// most `total` / rings, but fewer rings, shared by CPUs, where that would
/// make one smaller than `RING_BYTES_MIN` (include/tapio_abi.h). The rings
/// never hold more than `total` together, however many CPUs there are,
/// unless `total` itself is below the minimum.
pub fn ring_layout(total: u32, cpus: usize) -> (usize, u32) {
    let min = tapio_wire::limits::RING_BYTES_MIN;
    let most = (total / min).max(1) as usize;
    let rings = cpus.clamp(1, most);
    let share = total / rings as u32;
    let pow2 = if share == 0 {
        0
    } else {
        1u32 << (31 - share.leading_zeros())
    };
    (rings, pow2.max(min))
}

/// Defines, for one skeleton type:
/// - `fn $fn(index, config, prototypes) -> Observer`: opens it, turns off
///   the program variants this kernel cannot run (`$variants`), lets
///   `$prepare` adjust the opened object (map sizes, load-time constants),
///   loads,
///   writes the initial config, attaches, runs `$after` on the attached
///   skeleton, and keeps it type-erased;
/// - `fn $tps() -> Vec<String>`: the tracepoints its programs attach to,
///   from the `tp_btf/<name>` sections of the object (opened, not loaded;
///   variants share one).
macro_rules! loader {
    ($fn:ident, $tps:ident, $builder:path, $variants:expr, $prepare:expr, $after:expr) => {
        pub fn $tps() -> Vec<String> {
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};
            let mut obj = std::mem::MaybeUninit::uninit();
            let mut out: Vec<String> = Vec::new();
            let Ok(open) = <$builder>::default().open(&mut obj) else {
                return out;
            };
            for p in open.open_object().progs() {
                let section = p.section().to_string_lossy();
                if let Some(tp) = section.strip_prefix("tp_btf/") {
                    if !out.iter().any(|t| t == tp) {
                        out.push(tp.to_string());
                    }
                }
            }
            out
        }

        pub fn $fn(
            index: usize,
            k: &$crate::abi::KernelConfig,
            protos: &$crate::prototypes::Prototypes,
        ) -> libbpf_rs::Result<$crate::loader::Observer> {
            use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
            use $crate::loader::*;
            let mut open = <$builder>::default().open(storage())?;
            #[allow(clippy::redundant_closure_call)]
            choose_variants(open.open_object_mut(), &($variants)(protos))?;
            #[allow(clippy::redundant_closure_call)]
            ($prepare)(&mut open, protos);
            let rings = Rings::create(index)?;
            rings.prepare(open.open_object_mut())?;
            let mut skel = open.load()?;
            let mut observer = loaded(index, skel.object(), rings, k)?;
            skel.attach()?;
            #[allow(clippy::redundant_closure_call)]
            ($after)(&mut skel);
            observer.programs = loaded_programs(skel.object())?;
            observer.skel = Some(Box::new(skel));
            Ok(observer)
        }
    };
}
pub(crate) use loader;

/// Loads and attaches each observer, then drops it again: the feasibility
/// probe. Nothing stays loaded.
pub fn probe_each(k: &KernelConfig) -> Vec<(usize, Result<(), String>)> {
    route_libbpf_log();
    let protos = Prototypes::of_running_kernel();
    OBSERVERS
        .iter()
        .enumerate()
        .map(|(idx, spec)| {
            let r = (spec.load)(idx, k, &protos);
            (idx, r.map(drop).map_err(|e| format!("{e}")))
        })
        .collect()
}

pub type LoadFn = fn(usize, &KernelConfig, &Prototypes) -> libbpf_rs::Result<Observer>;

/// Loads every observer; failures are returned beside the successes.
pub fn load_all(k: &KernelConfig) -> (Vec<Observer>, Vec<(usize, String)>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    route_libbpf_log();
    let protos = Prototypes::of_running_kernel();
    log::info!("tracepoint prototypes: {}", protos.describe());
    for (idx, spec) in OBSERVERS.iter().enumerate() {
        // Test hook (crate::fault): this observer's load fails, to prove
        // the others keep running.
        if crate::fault::injected(&format!("load:{}", spec.wire.as_str())) {
            failed.push((idx, "fault injected by TAPIO_FAULT_INJECT".to_string()));
            continue;
        }
        match (spec.load)(idx, k, &protos) {
            Ok(o) => ok.push(o),
            Err(e) => failed.push((idx, format!("{e}"))),
        }
    }
    (ok, failed)
}

/// Raises RLIMIT_MEMLOCK where allowed. Kernels from 5.11 charge BPF
/// memory to the memory cgroup instead, so a refusal is only a warning.
pub fn raise_memlock() -> Result<(), std::io::Error> {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::abi;
    use crate::observers::{NETWORK, OBSERVERS};

    /// The network object loads and attaches on this kernel (skips loudly
    /// where BPF is not available).
    #[test]
    fn network_object_loads_and_attaches() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() || !is_root() {
            eprintln!("SKIPPED: network_object_loads_and_attaches needs root and kernel BTF");
            crate::test_skip::record("network_object_loads_and_attaches");
            return;
        }
        let k = crate::config::to_kernel(&tapio_wire::CompiledConfig::standalone_default(), 1);
        let o = (OBSERVERS[NETWORK].load)(NETWORK, &k, &crate::prototypes::Prototypes::default())
            .expect("network object loads and attaches");
        assert_eq!(o.index, NETWORK);
        let mut kc = crate::metrics::KernelCounters::default();
        super::CounterReaders(vec![(
            o.index,
            super::MapHandle::try_from(&o.counters_map).unwrap(),
        )])
        .read_into(&mut kc);
        assert_eq!(kc.get(0, abi::counter::ABI_MISMATCH), 0);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}

#[cfg(test)]
mod budgets {
    //! eBPF object budgets (size, map count, the largest map, the ring),
    //! from the observer table. The lean gate prints this table
    //! (docs/budgets.md records it).
    use crate::observers::OBSERVERS;
    use libbpf_rs::{AsRawLibbpf, ObjectBuilder};

    #[test]
    fn bpf_objects_stay_within_budget() {
        println!("BPF-BUDGET object bytes maps largest_max_entries largest_map ring_bytes");
        for spec in &OBSERVERS {
            let name = spec.wire.as_str();
            let bytes = tapio_bpf::objects::by_name(name).expect("an object per observer");
            let b = &spec.budget;
            let obj = ObjectBuilder::default()
                .name(name)
                .unwrap()
                .open_memory(bytes)
                .expect("object opens");
            let maps: Vec<(String, u32, libbpf_rs::MapType)> = obj
                .maps()
                .map(|m| {
                    (
                        m.name().to_string_lossy().into_owned(),
                        m.max_entries(),
                        m.map_type(),
                    )
                })
                .collect();
            let (big_name, big) = maps
                .iter()
                .filter(|m| m.0 != "events")
                .max_by_key(|m| m.1)
                .map(|m| (m.0.clone(), m.1))
                .unwrap_or_default();
            println!(
                "BPF-BUDGET {name} {} {} {big} {big_name} {}",
                bytes.len(),
                maps.len(),
                spec.ring_bytes
            );
            // Its rings: one array of them, and no other ring.
            let rings: Vec<_> = maps
                .iter()
                .filter(|m| {
                    m.2 == libbpf_rs::MapType::RingBuf || m.2 == libbpf_rs::MapType::ArrayOfMaps
                })
                .collect();
            assert_eq!(rings.len(), 1, "{name}: one array of rings: {rings:?}");
            assert_eq!(rings[0].0, "events", "{name}");
            assert_eq!(rings[0].2, libbpf_rs::MapType::ArrayOfMaps, "{name}");
            // Its entries' template: a ring of the smallest size
            // (TAPIO_RINGBUF_MIN_BYTES and its Rust mirror).
            let events = obj
                .maps()
                .find(|m| m.name() == "events")
                .expect("the events array");
            // SAFETY: the pointer is the open object's own map, alive while
            // `obj` is; bpf_map__inner_map returns NULL or a map of it.
            let template = unsafe {
                let inner = libbpf_sys::bpf_map__inner_map(events.as_libbpf_object().as_ptr());
                assert!(!inner.is_null(), "{name}: events has an inner map");
                (
                    libbpf_sys::bpf_map__type(inner),
                    libbpf_sys::bpf_map__max_entries(inner),
                )
            };
            assert_eq!(template.0, libbpf_sys::BPF_MAP_TYPE_RINGBUF, "{name}");
            assert_eq!(template.1, tapio_wire::limits::RING_BYTES_MIN, "{name}");
            assert!(
                bytes.len() <= b.object_bytes,
                "{name}: {} bytes > {}",
                bytes.len(),
                b.object_bytes
            );
            assert!(
                maps.len() <= b.maps,
                "{name}: {} maps > {}",
                maps.len(),
                b.maps
            );
            assert!(
                big <= b.largest_map_entries,
                "{name}: map {big_name} has {big} entries > {}",
                b.largest_map_entries
            );
        }
    }
}

#[cfg(test)]
mod ring_sizes {
    use super::ring_layout;
    use tapio_wire::limits::{RING_BYTES_MIN, RING_BYTES_NETWORK, RING_BYTES_STORAGE};

    /// A ring per CPU while each gets at least the minimum, a power of
    /// two; fewer, shared rings beyond that; never more bytes than the
    /// observer's together.
    #[test]
    fn rings_split_the_observers_bytes_and_none_is_below_the_minimum() {
        assert_eq!(ring_layout(RING_BYTES_NETWORK, 1), (1, 512 * 1024));
        assert_eq!(ring_layout(RING_BYTES_NETWORK, 2), (2, 256 * 1024));
        assert_eq!(ring_layout(RING_BYTES_NETWORK, 3), (3, 128 * 1024));
        assert_eq!(ring_layout(RING_BYTES_NETWORK, 4), (4, 128 * 1024));
        assert_eq!(ring_layout(RING_BYTES_STORAGE, 2), (2, 128 * 1024));
        assert_eq!(ring_layout(RING_BYTES_NETWORK, 16), (16, 32 * 1024));
        assert_eq!(ring_layout(RING_BYTES_NETWORK, 64), (16, 32 * 1024));
        assert_eq!(ring_layout(RING_BYTES_STORAGE, 64), (8, 32 * 1024));
        assert_eq!(ring_layout(RING_BYTES_NETWORK, 0), (1, 512 * 1024));
        assert_eq!(ring_layout(4096, 8), (1, RING_BYTES_MIN));
        for cpus in 0..=4096 {
            for total in [
                RING_BYTES_NETWORK,
                RING_BYTES_STORAGE,
                RING_BYTES_MIN,
                4096,
                1,
            ] {
                let (rings, b) = ring_layout(total, cpus);
                assert!(
                    rings >= 1 && rings <= cpus.max(1),
                    "{total}/{cpus}: {rings}"
                );
                assert!(b.is_power_of_two(), "{total}/{cpus}: {b}");
                assert!(b >= RING_BYTES_MIN, "{total}/{cpus}: {b}");
                let all = u64::from(b) * rings as u64;
                assert!(
                    all <= u64::from(total.max(RING_BYTES_MIN)),
                    "{total}/{cpus}: {rings} x {b}"
                );
            }
        }
    }
}
