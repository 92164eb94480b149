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
