//! The CPU's flush-to-zero / denormals-are-zero mode, per thread: subnormal floats cost
//! 10-100x a normal operation on x86 (microcode assists), and late in a long run
//! gradients and Adam moments are that small.
//!
//! Rust (like LLVM) assumes the default floating-point environment, and the standard
//! library has deprecated `_mm_setcsr` for that reason: code compiled under that
//! assumption may constant-fold or move a floating-point operation across a mode change.
//! The mode only changes what happens to subnormal values (flushed to a zero of the same
//! sign), so the worst such a move can do is let one result keep or lose a value below
//! `f32::MIN_POSITIVE`; nothing else in any result can change. To keep even that away,
//! the mode is set only at a thread's start or around a whole call (never inside a
//! kernel), through the [`FlushDenormals`] guard, which restores the previous mode.
//!
//! x86_64: MXCSR bits FTZ (15) and DAZ (6), which cover SSE, AVX and AVX-512.
//! aarch64: FPCR bit FZ (24). Elsewhere the functions do nothing and report `false`.

/// Whether this target can flush subnormals in hardware.
pub const SUPPORTED: bool = cfg!(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri)
));

#[cfg(all(target_arch = "x86_64", not(miri)))]
mod imp {
    use std::arch::asm;

    const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

    fn read() -> u32 {
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr stores the 4-byte MXCSR to the valid, aligned `csr`. Every x86_64
        // CPU has SSE, hence MXCSR.
        unsafe {
            asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        }
        csr
    }

    fn write(csr: u32) {
        // SAFETY: ldmxcsr loads a value read from MXCSR with only the FTZ and DAZ bits
        // changed; both bits exist on every x86_64 CPU (DAZ since the Pentium 4), so no
        // reserved bit is set and the load cannot fault.
        unsafe {
            asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly));
        }
    }

    pub fn enabled() -> bool {
        read() & FTZ_DAZ == FTZ_DAZ
    }

    pub fn set(on: bool) {
        let csr = read();
        write(if on { csr | FTZ_DAZ } else { csr & !FTZ_DAZ });
    }
}

#[cfg(all(target_arch = "aarch64", not(miri)))]
mod imp {
    use std::arch::asm;

    const FZ: u64 = 1 << 24;

    fn read() -> u64 {
        let fpcr: u64;
        // SAFETY: reading FPCR is allowed at EL0 and has no side effect.
        unsafe { asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags)) };
        fpcr
    }

    pub fn enabled() -> bool {
        read() & FZ != 0
    }

    pub fn set(on: bool) {
        let fpcr = read();
        let new = if on { fpcr | FZ } else { fpcr & !FZ };
        // SAFETY: writing FPCR is allowed at EL0; only the FZ bit differs from its value.
        unsafe { asm!("msr fpcr, {}", in(reg) new, options(nomem, nostack, preserves_flags)) };
    }
}

/// Other targets, and Miri (which runs no assembly): no mode to set.
#[cfg(any(not(any(target_arch = "x86_64", target_arch = "aarch64")), miri))]
mod imp {
    pub fn enabled() -> bool {
        false
    }
    pub fn set(_on: bool) {}
}

/// Whether the calling thread flushes subnormal inputs and results to zero.
pub fn flush_denormals_enabled() -> bool {
    imp::enabled()
}

/// Turns flushing of subnormals on or off for the calling thread (a thread-start hook's
/// job; elsewhere prefer [`FlushDenormals`], which restores the previous mode).
pub fn set_flush_denormals(on: bool) {
    imp::set(on)
}

/// Sets the calling thread's flush mode for the guard's lifetime and restores the
/// previous mode on drop (also when unwinding), so a caller's environment is left as found.
#[derive(Debug)]
#[must_use = "the mode is restored when the guard is dropped"]
pub struct FlushDenormals {
    previous: bool,
}

impl FlushDenormals {
    /// Sets the mode to `on` until the guard is dropped.
    pub fn set(on: bool) -> Self {
        let previous = flush_denormals_enabled();
        if previous != on {
            set_flush_denormals(on);
        }
        Self { previous }
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        if flush_denormals_enabled() != self.previous {
            set_flush_denormals(self.previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multiplies through a call the optimiser cannot see into, so the product is
    /// computed at run time under the thread's mode.
    fn product(a: f32, b: f32) -> f32 {
        std::hint::black_box(a) * std::hint::black_box(b)
    }

    #[test]
    fn guard_flushes_subnormal_results_and_restores_the_mode() {
        let before = flush_denormals_enabled();
        let tiny = f32::MIN_POSITIVE;
        assert!(product(tiny, 0.5) > 0.0, "default mode keeps subnormals");
        {
            let _g = FlushDenormals::set(true);
            assert_eq!(flush_denormals_enabled(), SUPPORTED);
            if SUPPORTED {
                assert_eq!(product(tiny, 0.5), 0.0, "subnormal result flushed");
                // DAZ (x86) / FZ (arm): a subnormal input reads as zero.
                let sub = std::hint::black_box(f32::from_bits(1));
                assert_eq!(product(sub, 1e30), 0.0, "subnormal input read as zero");
            }
            {
                let _inner = FlushDenormals::set(false);
                assert!(!flush_denormals_enabled());
                assert!(product(tiny, 0.5) > 0.0);
            }
            assert_eq!(flush_denormals_enabled(), SUPPORTED, "inner guard restored");
        }
        assert_eq!(flush_denormals_enabled(), before, "outer guard restored");
    }

    #[test]
    fn guard_restores_on_unwind() {
        let before = flush_denormals_enabled();
        let r = std::panic::catch_unwind(|| {
            let _g = FlushDenormals::set(!before);
            panic!("unwinding through the guard");
        });
        assert!(r.is_err());
        assert_eq!(flush_denormals_enabled(), before);
    }
}
