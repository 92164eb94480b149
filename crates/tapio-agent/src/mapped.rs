//! A BPF array map created with `BPF_F_MMAPABLE`, mapped into the agent:
//! memory the programs and the agent share without a system call per
//! access (the config slots, `crate::config`; the consumer's sleep flag,
//! `crate::poller`).

use std::os::fd::{AsFd, AsRawFd};

/// One mmap'ed BPF array map, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; its owners access it with
// volatile or atomic operations only (`ConfigSlots::write`, serialised by
// `&mut self`; `ConsumerFlag`).
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `bytes` of the array map behind `map` read-write.
    pub fn new(map: &impl AsFd, bytes: usize) -> std::io::Result<Mapping> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        let len = bytes.div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of a BPF_F_MMAPABLE array map's
        // fd; the kernel refuses (MAP_FAILED) a map that is not one, or a
        // length beyond its values.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Mapping {
    /// The first byte of the map's first value.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping this struct made, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
