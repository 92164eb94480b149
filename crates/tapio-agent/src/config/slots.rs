//! How the kernel carrier reaches one object: written into the slot not in
//! force of its mmap'ed `tapio_config` map, then made the slot in force
//! (`tapio_config_active`). The protocol is in `include/tapio_abi.h`: a
//! program never keeps a copy stamped with one generation and another's
//! thresholds.

use crate::abi::{CONFIG_SLOTS, KernelConfig};
use crate::mapped::Mapping;
use std::mem::{offset_of, size_of};
use std::os::fd::AsFd;
use std::sync::atomic::{Ordering, fence};

/// An array map's values are laid out every `round_up(value_size, 8)`.
const STRIDE: usize = size_of::<KernelConfig>().next_multiple_of(8);
const SEQ: usize = offset_of!(KernelConfig, seq);

/// The two config slots of one object and its slot-in-force index.
pub struct ConfigSlots {
    slots: Mapping,
    active: Mapping,
    /// The largest wakeup threshold for this object: half of one of its
    /// rings, so that the threshold can fire (include/tapio_abi.h).
    wakeup_cap: u32,
}

impl ConfigSlots {
    /// Maps `config` (`tapio_config`) and `active` (`tapio_config_active`)
    /// of an object whose rings hold `ring_bytes` each.
    pub fn open(
        config: &impl AsFd,
        active: &impl AsFd,
        ring_bytes: u32,
    ) -> std::io::Result<ConfigSlots> {
        Ok(ConfigSlots {
            slots: Mapping::new(config, STRIDE * CONFIG_SLOTS)?,
            active: Mapping::new(active, size_of::<u32>())?,
            wakeup_cap: ring_bytes / 2,
        })
    }

    /// Writes `k` into the slot not in force and makes it the one in
    /// force. `pause` runs between the two halves of the write (a test
    /// hook: `crate::fault`, `config:slow_write:<ms>`).
    pub fn write(&mut self, k: &KernelConfig, pause: impl Fn()) {
        let bytes = capped(k, self.wakeup_cap).to_bytes();
        // SAFETY: `active` maps at least one u32 and `slots` two strides of
        // a KernelConfig (`open`); every offset below stays inside them,
        // the u32s are 4-aligned (page-aligned bases, SEQ % 4 == 0), and
        // volatile accesses keep the compiler from merging or reordering
        // them with the fences. The programs only read this memory.
        unsafe {
            let active = self.active.ptr().cast::<u32>();
            let next = ((std::ptr::read_volatile(active) & 1) ^ 1) as usize;
            let slot = self.slots.ptr().add(next * STRIDE);
            let seq = slot.add(SEQ).cast::<u32>();
            let s = std::ptr::read_volatile(seq);
            // Odd: a program that copies this slot now throws the copy away.
            std::ptr::write_volatile(seq, s.wrapping_add(1) | 1);
            fence(Ordering::SeqCst);
            let half = SEQ / 2;
            for (i, b) in bytes.iter().enumerate().take(SEQ) {
                if i == half {
                    pause();
                }
                std::ptr::write_volatile(slot.add(i), *b);
            }
            fence(Ordering::SeqCst);
            std::ptr::write_volatile(seq, (s.wrapping_add(1) | 1).wrapping_add(1));
            fence(Ordering::SeqCst);
            std::ptr::write_volatile(active, next as u32);
            fence(Ordering::SeqCst);
        }
    }
}

/// `k` for an object whose wakeup threshold may be at most `cap`.
fn capped(k: &KernelConfig, cap: u32) -> KernelConfig {
    let mut k = *k;
    k.ringbuf_wakeup_bytes = k.ringbuf_wakeup_bytes.min(cap);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each object gets the profile's threshold, or half its ring if that
    /// is less; nothing else changes.
    #[test]
    fn the_wakeup_threshold_is_at_most_half_the_objects_ring() {
        let mut k = KernelConfig {
            generation: 7,
            ringbuf_wakeup_bytes: 128 * 1024,
            ..KernelConfig::default()
        };
        let small = capped(&k, 128 * 1024 / 2);
        assert_eq!(small.ringbuf_wakeup_bytes, 64 * 1024);
        assert_eq!(small.generation, 7);
        assert_eq!(capped(&k, 256 * 1024 / 2).ringbuf_wakeup_bytes, 128 * 1024);
        k.ringbuf_wakeup_bytes = 4096;
        assert_eq!(capped(&k, 64 * 1024).ringbuf_wakeup_bytes, 4096);
    }

    #[test]
    fn the_sequence_field_ends_the_carrier_and_is_aligned() {
        assert_eq!(SEQ, 112);
        assert_eq!(SEQ % 4, 0);
        assert_eq!(STRIDE, 120);
    }
}
