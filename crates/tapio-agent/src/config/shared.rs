//! The config in force, shared between threads.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tapio_wire::CompiledConfig;

/// The applied config with its generation. Readers poll `generation()`
/// (one atomic load) and take a snapshot only when it changed.
#[derive(Clone)]
pub struct SharedConfig {
    inner: Arc<(AtomicU32, Mutex<Arc<CompiledConfig>>)>,
}

impl SharedConfig {
    pub fn new(cfg: CompiledConfig, generation: u32) -> Self {
        SharedConfig {
            inner: Arc::new((AtomicU32::new(generation), Mutex::new(Arc::new(cfg)))),
        }
    }

    pub fn generation(&self) -> u32 {
        self.inner.0.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> (u32, Arc<CompiledConfig>) {
        let guard = match self.inner.1.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (self.generation(), Arc::clone(&guard))
    }

    pub fn set(&self, cfg: CompiledConfig, generation: u32) {
        let mut guard = match self.inner.1.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = Arc::new(cfg);
        self.inner.0.store(generation, Ordering::Release);
    }
}

/// Applies `new` as the next kernel config generation: writes it into
/// every loaded object (`write` returns how many writes failed) and, only
/// when every write succeeded, makes it the config in force. A partial
/// write is rolled back (the previous config is written again under its
/// own generation), so the kernel, user space and what the agent reports
/// to the controller as applied never disagree. The one place a config is
/// applied: at SIGHUP and for the controller's config alike.
pub fn apply_generation(
    shared: &SharedConfig,
    new: CompiledConfig,
    write: impl Fn(&CompiledConfig, u32) -> usize,
) -> Result<u32, usize> {
    let (current, old) = shared.snapshot();
    let next = current.wrapping_add(1).max(1);
    let failures = write(&new, next);
    if failures > 0 {
        let _ = write(&old, current);
        return Err(failures);
    }
    shared.set(new, next);
    Ok(next)
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_failed_kernel_write_is_rolled_back_and_not_applied() {
        let shared = SharedConfig::new(CompiledConfig::standalone_default(), 4);
        let mut next = CompiledConfig::standalone_default();
        next.process.exec_enabled = !next.process.exec_enabled;
        let writes = RefCell::new(Vec::new());
        let r = apply_generation(&shared, next.clone(), |c, g| {
            writes.borrow_mut().push((c.process.exec_enabled, g));
            usize::from(g == 5) // the new generation fails to write
        });
        assert_eq!(r, Err(1));
        let (g, cfg) = shared.snapshot();
        assert_eq!(g, 4, "the generation in force did not move");
        assert_eq!(cfg.process.exec_enabled, !next.process.exec_enabled);
        assert_eq!(
            *writes.borrow(),
            [
                (next.process.exec_enabled, 5),
                (!next.process.exec_enabled, 4)
            ],
            "the new config was tried, then the old one written back"
        );
        let r = apply_generation(&shared, next.clone(), |_, _| 0);
        assert_eq!(r, Ok(5));
        assert_eq!(
            shared.snapshot().1.process.exec_enabled,
            next.process.exec_enabled
        );
    }
}
