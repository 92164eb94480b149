//! Opening, loading and attaching the BPF objects, one per observer.
//!
//! An observer that fails to load or attach is logged with the kernel's
//! reason and reported `failed`; the others go on. The initial
//! `tapio_config` is written between load and attach, so the first record
//! already carries a generation.

use crate::abi::{KernelConfig, OBS_NETWORK, OBS_PROCESS, OBS_STORAGE, counter};
use crate::prototypes::Prototypes;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, OpenObject};
use std::mem::MaybeUninit;

/// A loaded, attached observer object.
pub enum Loaded {
    Network(Box<tapio_bpf::network::NetworkSkel<'static>>),
    Storage(Box<tapio_bpf::storage::StorageSkel<'static>>),
    Process(Box<tapio_bpf::process::ProcessSkel<'static>>),
}

pub struct Observer {
    pub index: usize,
    pub skel: Loaded,
    /// Each loaded program's name and an owned fd (for its run counters:
    /// recursion misses), until `ProgramReaders` takes them.
    pub programs: Vec<(String, std::os::fd::OwnedFd)>,
    /// Owned handles (dup'ed fds): usable from any thread and after the
    /// skeleton is gone.
    pub config_map: MapHandle,
    pub counters_map: MapHandle,
}

impl Observer {
    /// The observer's ring buffer map.
    pub fn events_map(&self) -> &dyn MapCore {
        match &self.skel {
            Loaded::Network(s) => &s.maps.events,
            Loaded::Storage(s) => &s.maps.events,
            Loaded::Process(s) => &s.maps.events,
        }
    }

    /// Detaches every program (drops the links).
    pub fn detach(&mut self) {
        match &mut self.skel {
            Loaded::Network(s) => s.links = Default::default(),
            Loaded::Storage(s) => s.links = Default::default(),
            Loaded::Process(s) => s.links = Default::default(),
        }
    }
}

/// Handles for writing config into every loaded object.
#[derive(Default)]
pub struct ConfigWriters(pub Vec<MapHandle>);

impl ConfigWriters {
    pub fn from_observers(observers: &[Observer]) -> ConfigWriters {
        ConfigWriters(
            observers
                .iter()
                .filter_map(|o| MapHandle::try_from(&o.config_map).ok())
                .collect(),
        )
    }

    /// Writes `k` to all objects; returns how many writes failed.
    pub fn write(&self, k: &KernelConfig) -> usize {
        let key = 0u32.to_ne_bytes();
        let bytes = k.to_bytes();
        self.0
            .iter()
            .filter(|m| m.update(&key, &bytes, MapFlags::ANY).is_err())
            .count()
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

fn storage() -> &'static mut MaybeUninit<OpenObject> {
    // One small allocation per observer for the process lifetime: it gives
    // the skeleton a 'static borrow, so it can move to the poller thread.
    Box::leak(Box::new(MaybeUninit::uninit()))
}

fn handles(
    config: &libbpf_rs::MapMut<'_>,
    counters: &libbpf_rs::MapMut<'_>,
) -> libbpf_rs::Result<(MapHandle, MapHandle)> {
    Ok((MapHandle::try_from(config)?, MapHandle::try_from(counters)?))
}

fn write_initial(cfg_map: &MapHandle, k: &KernelConfig) -> libbpf_rs::Result<()> {
    cfg_map.update(&0u32.to_ne_bytes(), &k.to_bytes(), MapFlags::ANY)
}

/// Turns autoload off for the program variants this kernel cannot run
/// (crate::prototypes). A name that is not in the object is a build
/// mismatch, and fails the load.
fn choose_variants(obj: &mut OpenObject, choices: &[(&str, bool)]) -> libbpf_rs::Result<()> {
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

/// The variants each observer loads on this kernel.
fn variants(index: usize, p: &Prototypes) -> Vec<(&'static str, bool)> {
    match index {
        OBS_PROCESS => {
            let mut v = p.process_programs().to_vec();
            v.push(("tapio_sched_process_free", p.process_free_hook()));
            v
        }
        OBS_STORAGE => p.storage_programs().to_vec(),
        _ => Vec::new(),
    }
}

/// The programs that were loaded (autoload on), with dup'ed fds.
fn loaded_programs(
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

/// CLOCK_MONOTONIC in ns: the clock of `request.start_time_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Opens, loads, configures and attaches one skeleton type; `$after`
/// runs on the attached skeleton.
macro_rules! loader {
    ($fn:ident, $builder:path, $variant:ident, $index:expr, $after:expr) => {
        fn $fn(k: &KernelConfig, protos: &Prototypes) -> libbpf_rs::Result<Observer> {
            let mut open = <$builder>::default().open(storage())?;
            choose_variants(open.open_object_mut(), &variants($index, protos))?;
            let mut skel = open.load()?;
            let (config_map, counters_map) =
                handles(&skel.maps.tapio_config, &skel.maps.tapio_counters)?;
            write_initial(&config_map, k)?;
            skel.attach()?;
            #[allow(clippy::redundant_closure_call)]
            ($after)(&mut skel);
            let programs = loaded_programs(skel.object())?;
            Ok(Observer {
                index: $index,
                programs,
                skel: Loaded::$variant(Box::new(skel)),
                config_map,
                counters_map,
            })
        }
    };
}

loader!(
    load_network,
    tapio_bpf::network::NetworkSkelBuilder,
    Network,
    OBS_NETWORK,
    |_: &mut tapio_bpf::network::NetworkSkel<'_>| {}
);
loader!(
    load_storage,
    tapio_bpf::storage::StorageSkelBuilder,
    Storage,
    OBS_STORAGE,
    |s: &mut tapio_bpf::storage::StorageSkel<'_>| {
        // Requests that started before this instant may have been issued
        // before the programs were attached.
        if let Some(bss) = s.maps.bss_data.as_deref_mut() {
            bss.attached_ns = monotonic_ns();
        }
    }
);
loader!(
    load_process,
    tapio_bpf::process::ProcessSkelBuilder,
    Process,
    OBS_PROCESS,
    |_: &mut tapio_bpf::process::ProcessSkel<'_>| {}
);

/// Loads and attaches each observer, then drops it again: the feasibility
/// probe. Nothing stays loaded.
pub fn probe_each(k: &KernelConfig) -> Vec<(usize, Result<(), String>)> {
    let protos = Prototypes::of_running_kernel();
    loaders()
        .into_iter()
        .map(|(idx, load)| (idx, load(k, &protos).map(drop).map_err(|e| format!("{e}"))))
        .collect()
}

type LoadFn = fn(&KernelConfig, &Prototypes) -> libbpf_rs::Result<Observer>;

fn loaders() -> [(usize, LoadFn); 3] {
    [
        (OBS_NETWORK, load_network),
        (OBS_STORAGE, load_storage),
        (OBS_PROCESS, load_process),
    ]
}

/// Loads every observer; failures are returned beside the successes.
pub fn load_all(k: &KernelConfig) -> (Vec<Observer>, Vec<(usize, String)>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let loaders = loaders();
    let protos = Prototypes::of_running_kernel();
    log::info!("tracepoint prototypes: {}", protos.describe());
    let inject = std::env::var("TAPIO_FAULT_INJECT").unwrap_or_default();
    for (idx, load) in loaders {
        // Test hook: `TAPIO_FAULT_INJECT=load:<observer>` makes that
        // observer's load fail, to prove the others keep running.
        let name = crate::metrics::OBSERVER_NAMES[idx];
        if inject
            .split(',')
            .any(|f| f.strip_prefix("load:") == Some(name))
        {
            failed.push((idx, "fault injected by TAPIO_FAULT_INJECT".to_string()));
            continue;
        }
        match load(k, &protos) {
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
    use std::mem::{offset_of, size_of};
    use tapio_bpf::network::types as skel;

    /// The hand-written mirrors agree with the types libbpf-cargo generated
    /// from the compiled object's BTF (which came from tapio_abi.h).
    #[test]
    fn mirrors_match_the_skeleton_types() {
        assert_eq!(
            size_of::<skel::tapio_event_header>(),
            size_of::<abi::EventHeader>()
        );
        assert_eq!(
            size_of::<skel::tapio_net_event>(),
            size_of::<abi::NetEvent>()
        );
        assert_eq!(
            size_of::<skel::tapio_storage_event>(),
            size_of::<abi::StorageEvent>()
        );
        assert_eq!(
            size_of::<skel::tapio_process_event>(),
            size_of::<abi::ProcessEvent>()
        );
        assert_eq!(
            size_of::<skel::tapio_config>(),
            size_of::<abi::KernelConfig>()
        );
        macro_rules! same {
            ($s:ty, $m:ty, $($f:ident),+) => {$(
                assert_eq!(offset_of!($s, $f), offset_of!($m, $f), "{}", stringify!($f));
            )+};
        }
        same!(
            skel::tapio_net_event,
            abi::NetEvent,
            hdr,
            cgroup_id,
            pid,
            retransmits,
            span_ns,
            saddr,
            daddr,
            sport,
            dport,
            family,
            flags,
            state,
            syn_retries,
            comm
        );
        same!(
            skel::tapio_storage_event,
            abi::StorageEvent,
            hdr,
            cgroup_id,
            sector,
            latency_ns,
            bytes,
            dev_major,
            dev_minor,
            pid,
            op,
            error,
            flags,
            comm
        );
        same!(
            skel::tapio_process_event,
            abi::ProcessEvent,
            hdr,
            cgroup_id,
            memcg_id,
            total_vm_pages,
            rss_pages,
            pid,
            ppid,
            exit_code,
            signal,
            oom_score_adj,
            flags,
            comm,
            filename
        );
        same!(
            skel::tapio_config,
            abi::KernelConfig,
            abi_version,
            generation,
            network_enabled,
            storage_enabled,
            process_enabled,
            exec_enabled,
            test_flags,
            retransmit_window_ns,
            slow_io_threshold_ns,
            ringbuf_wakeup_bytes,
            ignore_exit_count,
            ignore_exit_codes,
            slow_io_critical_ns
        );
        assert_eq!(
            offset_of!(skel::tapio_event_header, config_generation),
            offset_of!(abi::EventHeader, config_generation)
        );
        assert_eq!(
            offset_of!(skel::tapio_event_header, timestamp_ns),
            offset_of!(abi::EventHeader, timestamp_ns)
        );
    }

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
        let o = super::load_network(&k, &crate::prototypes::Prototypes::default())
            .expect("network object loads and attaches");
        assert_eq!(o.index, abi::OBS_NETWORK);
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
    //! eBPF object budgets: size, map count and the largest map. The lean
    //! gate prints this table (docs/budgets.md records it).
    use libbpf_rs::ObjectBuilder;

    /// (object, bytes, maps, largest max_entries of a non-ring map, ring
    /// buffer bytes) limits.
    /// The ring sizes are the ABI's (tapio_wire mirrors tapio_abi.h).
    const LIMITS: [(&str, usize, usize, u32, u32); 3] = [
        (
            "network",
            40 * 1024,
            5,
            16_384,
            tapio_wire::RING_BYTES_NETWORK,
        ),
        (
            "storage",
            24 * 1024,
            5,
            8_192,
            tapio_wire::RING_BYTES_STORAGE,
        ),
        (
            "process",
            48 * 1024,
            7,
            8_192,
            tapio_wire::RING_BYTES_PROCESS,
        ),
    ];

    #[test]
    fn bpf_objects_stay_within_budget() {
        let objects: [(&str, &[u8]); 3] = [
            ("network", tapio_bpf::objects::NETWORK),
            ("storage", tapio_bpf::objects::STORAGE),
            ("process", tapio_bpf::objects::PROCESS),
        ];
        println!("BPF-BUDGET object bytes maps largest_max_entries largest_map ring_bytes");
        for ((name, bytes), (lname, max_bytes, max_maps, max_entries, ring_bytes)) in
            objects.into_iter().zip(LIMITS)
        {
            assert_eq!(name, lname);
            let obj = ObjectBuilder::default()
                .name(name)
                .unwrap()
                .open_memory(bytes)
                .expect("object opens");
            let maps: Vec<(String, u32, bool)> = obj
                .maps()
                .map(|m| {
                    let ring = m.map_type() == libbpf_rs::MapType::RingBuf;
                    (
                        m.name().to_string_lossy().into_owned(),
                        m.max_entries(),
                        ring,
                    )
                })
                .collect();
            let (big_name, big, _) = maps
                .iter()
                .filter(|m| !m.2)
                .max_by_key(|m| m.1)
                .cloned()
                .unwrap_or_default();
            let ring: u32 = maps.iter().filter(|m| m.2).map(|m| m.1).sum();
            println!(
                "BPF-BUDGET {name} {} {} {big} {big_name} {ring}",
                bytes.len(),
                maps.len()
            );
            assert_eq!(ring, ring_bytes, "{name}: its one ring buffer");
            assert!(
                bytes.len() <= max_bytes,
                "{name}: {} bytes > {max_bytes}",
                bytes.len()
            );
            assert!(
                maps.len() <= max_maps,
                "{name}: {} maps > {max_maps}",
                maps.len()
            );
            assert!(
                big <= max_entries,
                "{name}: map {big_name} has {big} entries > {max_entries}"
            );
        }
    }
}
