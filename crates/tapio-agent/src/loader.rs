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
    /// The ring buffer (an owned handle).
    pub events: MapHandle,
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
    /// The observer's ring buffer map.
    pub fn events_map(&self) -> &dyn MapCore {
        &self.events
    }

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
            let mut skel = open.load()?;
            let counters_map = libbpf_rs::MapHandle::try_from(&skel.maps.tapio_counters)?;
            let events = libbpf_rs::MapHandle::try_from(&skel.maps.events)?;
            // The first config, before the programs are attached.
            let mut config = $crate::config::ConfigSlots::open(
                &skel.maps.tapio_config,
                &skel.maps.tapio_config_active,
            )
            .map_err(libbpf_rs::Error::from)?;
            config.write(k, || {});
            let consumer = $crate::poller::ConsumerFlag::open(&skel.maps.tapio_consumer)
                .map_err(libbpf_rs::Error::from)?;
            skel.attach()?;
            #[allow(clippy::redundant_closure_call)]
            ($after)(&mut skel);
            let programs = loaded_programs(skel.object())?;
            Ok(Observer {
                index,
                programs,
                skel: Some(Box::new(skel)),
                events,
                config: Some(config),
                counters_map,
                consumer: Some(consumer),
            })
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
    use libbpf_rs::ObjectBuilder;

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
            assert_eq!(ring, spec.ring_bytes, "{name}: its one ring buffer");
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
