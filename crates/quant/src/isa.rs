//! Run-time choice of SIMD kernels.
//!
//! The CPU is probed once; the level actually used is the lower of what the CPU has and a cap
//! (`set_max_isa`, or the `HEARTH_ISA` environment variable read on first use). Every kernel
//! level computes bit-identical results, so the cap changes speed, never numbers.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level, ordered from least to most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust; the only level on non-x86 targets.
    Scalar = 0,
    /// AVX2 + FMA + F16C.
    Avx2 = 1,
    /// AVX-512 F/BW/VL on top of `Avx2`.
    Avx512 = 2,
    /// AVX-512 VNNI (`vpdpbusd`) on top of `Avx512`.
    Avx512Vnni = 3,
    /// AMX tiles on top of `Avx512Vnni`, with AVX-512 BF16 and VBMI (the bf16 tile products
    /// convert and place their operands with them; see [`crate::amx`]).
    Amx = 4,
}

impl Isa {
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Vnni,
        Isa::Amx,
    ];

    /// The spelling `HEARTH_ISA` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
        }
    }

    fn from_u8(v: u8) -> Isa {
        Isa::ALL.get(v as usize).copied().unwrap_or(Isa::Amx)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Isa, String> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown ISA level {s:?}; expected one of scalar, avx2, avx512, avx512vnni, amx"
                )
            })
    }
}

/// The best level this CPU supports (probed once).
pub fn detected_isa() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma") && has!("f16c")) {
        return Isa::Scalar;
    }
    if !(has!("avx512f") && has!("avx512bw") && has!("avx512vl")) {
        return Isa::Avx2;
    }
    if !has!("avx512vnni") {
        Isa::Avx512
    } else if has!("avx512bf16") && has!("avx512vbmi") && crate::amx::available() {
        Isa::Amx
    } else {
        Isa::Avx512Vnni
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Scalar
}

const UNSET: u8 = u8::MAX;
static CAP: AtomicU8 = AtomicU8::new(UNSET);

/// Caps the level used from now on (e.g. `Isa::Scalar` to test the portable path).
/// Overrides `HEARTH_ISA`.
pub fn set_max_isa(cap: Isa) {
    CAP.store(cap as u8, Ordering::Relaxed);
}

/// The current cap: `set_max_isa`'s value, else `HEARTH_ISA`, else no cap.
pub fn max_isa() -> Isa {
    let cap = CAP.load(Ordering::Relaxed);
    if cap != UNSET {
        return Isa::from_u8(cap);
    }
    let from_env = match std::env::var("HEARTH_ISA") {
        Ok(s) => s.parse().unwrap_or_else(|e| {
            // A typo must not silently pick a different kernel than the user asked for.
            eprintln!("warning: HEARTH_ISA: {e}; using the best level the CPU supports");
            Isa::Amx
        }),
        Err(_) => Isa::Amx,
    };
    // First reader wins; a concurrent `set_max_isa` is kept.
    let _ = CAP.compare_exchange(UNSET, from_env as u8, Ordering::Relaxed, Ordering::Relaxed);
    Isa::from_u8(CAP.load(Ordering::Relaxed))
}

/// The level kernels run at: the detected level, capped.
pub fn active_isa() -> Isa {
    detected_isa().min(max_isa())
}

/// Every level this CPU can run, `Scalar` first (tests run each against the scalar twin).
pub fn available_isas() -> impl Iterator<Item = Isa> {
    Isa::ALL.into_iter().filter(|i| *i <= detected_isa())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
        }
        assert_eq!(" AVX2 ".parse::<Isa>(), Ok(Isa::Avx2));
        assert!("sse9".parse::<Isa>().is_err());
    }

    #[test]
    fn available_levels_start_with_scalar() {
        let levels: Vec<Isa> = available_isas().collect();
        assert_eq!(levels[0], Isa::Scalar);
        assert_eq!(*levels.last().unwrap(), detected_isa());
    }
}
