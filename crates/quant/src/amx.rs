//! Intel AMX (Advanced Matrix Extensions) on stable Rust: detection, the per-process permission
//! Linux requires, the tile configuration, and the few tile instructions our kernels use, as
//! inline assembly (the AMX intrinsics and the `amx-tile` target feature are not stable yet).
//!
//! A tile register holds up to 16 rows of 64 bytes. `tdpbsud c, a, b` adds to the i32 tile `c`
//! (rows of `a` × 16 columns) the products of groups of 4 signed bytes of `a`'s rows with 4
//! unsigned bytes of `b`'s columns: `c[m][n] += Σ_kk Σ_i a[m][4kk + i] · b[kk][4n + i]` — one
//! instruction is 16 × 16 × 64 multiply-adds.
//!
//! Tile state is per thread: a kernel loads its configuration with [`Tiles::configure`], and
//! releases the tiles when the returned guard drops, so a context switch saves no tile data.

/// Whether this CPU has AMX-TILE and AMX-INT8, the OS enabled their state (XCR0), and Linux
/// granted this process the right to use it (`arch_prctl(ARCH_REQ_XCOMP_PERM)`). Probed once.
pub fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(linux::probe)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod linux {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};

    const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    const SYS_ARCH_PRCTL: u64 = 158;

    fn arch_prctl(code: u64, arg: u64) -> i64 {
        let ret: i64;
        // SAFETY: arch_prctl with these codes reads or sets this process's xstate permissions
        // and writes at most one u64 through `arg` (ARCH_GET_XCOMP_PERM).
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as i64 => ret,
                in("rdi") code,
                in("rsi") arg,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        ret
    }

    pub(super) fn probe() -> bool {
        let leaf1 = __cpuid_count(1, 0);
        let osxsave = leaf1.ecx & (1 << 27) != 0;
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        if !(osxsave && tile && int8) {
            return false;
        }
        // SAFETY: OSXSAVE is set, so XGETBV is enabled.
        let xcr0 = unsafe { xcr0() };
        // XTILECFG (17) and XTILEDATA (18) must be OS-enabled.
        if xcr0 & (3 << 17) != 3 << 17 {
            return false;
        }
        if arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0 {
            return false;
        }
        let mut perm = 0u64;
        let ret = arch_prctl(ARCH_GET_XCOMP_PERM, &mut perm as *mut u64 as u64);
        ret == 0 && perm & (1 << XFEATURE_XTILEDATA) != 0
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        // SAFETY: the caller checked OSXSAVE.
        unsafe { _xgetbv(0) }
    }
}

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    _reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Tiles configured on this thread; released when dropped.
pub struct Tiles(());

impl Tiles {
    /// Configures tiles 0..8 as 16 rows of 64 bytes each.
    ///
    /// # Safety
    /// [`available`] must have returned true.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn configure() -> Tiles {
        let cfg = Config {
            palette: 1,
            start_row: 0,
            _reserved: [0; 14],
            colsb: std::array::from_fn(|i| if i < 8 { 64 } else { 0 }),
            rows: std::array::from_fn(|i| if i < 8 { 16 } else { 0 }),
        };
        // SAFETY: AMX is usable (the caller's contract); the configuration is valid.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack)) };
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: tiles were configured by `configure`, so AMX is usable.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem))
        };
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// One `tdpbsud` against a scalar product of signed × unsigned bytes.
    #[test]
    fn a_tile_product_equals_the_scalar_one() {
        if !available() {
            eprintln!("no AMX here; skipped");
            return;
        }
        let a: Vec<u8> = (0..1024).map(|i| (i * 37 % 256) as u8).collect();
        let b: Vec<u8> = (0..1024).map(|i| (i * 91 % 256) as u8).collect();
        let mut c = vec![0i32; 256];
        // SAFETY: AMX is available; each buffer is 16 rows of 64 bytes.
        unsafe {
            let _tiles = Tiles::configure();
            std::arch::asm!(
                "tilezero tmm0",
                "tileloadd tmm4, [{a} + {s}*1]",
                "tileloadd tmm6, [{b} + {s}*1]",
                "tdpbsud tmm0, tmm4, tmm6",
                "tilestored [{c} + {s}*1], tmm0",
                a = in(reg) a.as_ptr(),
                b = in(reg) b.as_ptr(),
                c = in(reg) c.as_mut_ptr(),
                s = in(reg) 64usize,
                options(nostack)
            );
        }
        for m in 0..16 {
            for n in 0..16 {
                let want: i32 = (0..64)
                    .map(|k| a[m * 64 + k] as i8 as i32 * b[(k / 4) * 64 + 4 * n + k % 4] as i32)
                    .sum();
                assert_eq!(c[m * 16 + n], want, "m{m} n{n}");
            }
        }
    }
}
