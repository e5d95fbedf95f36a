//! The AMX tile kernel for bf16 weights (Sapphire Rapids and later): `tdpbf16ps`
//! multiplies a 16-row tile of input pairs by a 16-pair tile of weight pairs into 16 x 16
//! f32 sums, 16 times the multiply-adds of an AVX-512 instruction. The instructions
//! assemble through `asm!` (Rust's AMX intrinsics are not stable); Linux lends the tile
//! registers only after `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked once
//! per process. Each thread loads its tile configuration at the start of every matmul.
//!
//! The hardware sums a tile's products in its own order and precision (measured: within
//! 3e-6 of the f64 sum over 800 inputs, where sequential f32 sums differ from it by as
//! much; 98 of 512 sums bit-equal to sequential f32), so this kernel is held to a bound,
//! not to the portable kernel's bits.

use std::arch::asm;
use std::sync::OnceLock;

/// Columns of a weight tile (16 f32 sums per tile row) and pairs per tile (64 bytes).
const T: usize = 16;
/// Rows per chunk of a matmul: 256 rows of a 784-input layer's pairs are 400 KB, in L2.
const MC: usize = 256;
/// The most steps (blocks of 16 pairs) of a K block: a 32-column panel's weight tiles for
/// 16 steps are 32 KB, which stay in the 48 KB L1 while the row blocks pass over them.
const KB: usize = 16;

/// Whether the CPU has AMX-TILE and AMX-BF16, the OS saves tile state, and Linux granted
/// this process the tile registers. Asked once.
pub(crate) fn available() -> bool {
    // Miri runs no assembly (CPUID included); the tile kernels are tested natively.
    if cfg!(miri) {
        return false;
    }
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(|| {
        // SAFETY: cpuid leaf 7 exists on every x86_64 CPU that reports max leaf >= 7,
        // checked first; xgetbv only where CPUID says the OS enabled XSAVE.
        let cpu = unsafe {
            use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
            if __cpuid(0).eax < 7 || __cpuid(1).ecx & (1 << 27) == 0 {
                return false;
            }
            let edx = __cpuid_count(7, 0).edx;
            let amx = edx & (1 << 24) != 0 && edx & (1 << 22) != 0;
            // XCR0 bits 17 and 18: tile configuration and tile data state.
            amx && _xgetbv(0) & (3 << 17) == 3 << 17
        };
        cpu && request_tiles()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; false if refused.
fn request_tiles() -> bool {
    #[cfg(target_os = "linux")]
    {
        const ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: a plain system call; it changes no memory of this process.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Pairs a row of the kernel's input holds: the layer's pairs rounded up to a whole tile
/// (the padding is zero).
pub(crate) fn row_pairs(pairs: usize) -> usize {
    pairs.div_ceil(T) * T
}

/// Weights as AMX tiles: per 32-column panel, per block of 16 pairs, two 16 x 16 tiles
/// (columns 0-15, then 16-31), each 16 rows of 16 `u32` pairs, back to back (a tile load
/// then reads 1 KiB in a row). Zero past the last column and the last pair. The tiles
/// start on a 64-byte boundary, so a tile row is one cache line (see [`aligned`]).
#[derive(Debug)]
pub(crate) struct AmxWeights {
    n: usize,
    /// Blocks of 16 pairs per panel.
    steps: usize,
    /// The tiles from `start` on; never resized, so `start` stays aligned.
    buf: Vec<u32>,
    start: usize,
}

/// Where a buffer of `u32`s reaches a 64-byte boundary: AMX reads a tile row as 64 bytes,
/// and a row across two cache lines costs two. Measured (784-768-...-10's matmuls, one
/// thread): inputs and weights aligned ran 128 rows at 400-520 GMAC/s; the same with the
/// input 16-48 bytes off, 256 rows at 290-330.
pub(crate) fn aligned(buf: &[u32]) -> usize {
    buf.as_ptr().align_offset(64).min(T - 1)
}

impl AmxWeights {
    /// From the pair panels of [`crate::bf16::Bf16Weights`] (`panels` of `pairs` rows of
    /// 32 `u32`). `None` if the buffer cannot be allocated.
    pub(crate) fn new(panel_pairs: &[u32], pairs: usize, n: usize) -> Option<Self> {
        let steps = row_pairs(pairs) / T;
        let panels = n.div_ceil(2 * T);
        let count = panels.checked_mul(steps)?.checked_mul(2 * T * T)?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(count.checked_add(T - 1)?).ok()?;
        buf.resize(count + T - 1, 0);
        let start = aligned(&buf);
        let tiles = &mut buf[start..start + count];
        for p in 0..panels {
            for st in 0..steps {
                for half in 0..2 {
                    let tile = ((p * steps + st) * 2 + half) * T * T;
                    for jr in 0..T {
                        let j = st * T + jr;
                        if j >= pairs {
                            break;
                        }
                        let src = (p * pairs + j) * 2 * T + half * T;
                        tiles[tile + jr * T..tile + jr * T + T]
                            .copy_from_slice(&panel_pairs[src..src + T]);
                    }
                }
            }
        }
        Some(Self {
            n,
            steps,
            buf,
            start,
        })
    }

    /// `dst[m, n] = x W^T`, `x` given as `m` rows of [`row_pairs`] bf16 pairs.
    ///
    /// # Safety
    /// [`available`] must have returned true; `x` must hold `m * row_pairs` values and
    /// `dst` `m * n`.
    pub(crate) unsafe fn matmul(&self, x: &[u32], dst: &mut [f32], m: usize) {
        assert!(dst.len() >= m * self.n, "amx matmul sizes");
        self.matmul_panels(x, dst.as_mut_ptr(), m, 0..self.n.div_ceil(2 * T));
    }

    /// Columns `panels.start * 32..` to `panels.end * 32` (or `n`) of [`Self::matmul`],
    /// for the column split: other threads may write the other columns of `dst`
    /// meanwhile.
    ///
    /// # Safety
    /// As [`Self::matmul`], with `dst` valid for `m * n` values and no other thread
    /// touching these columns.
    pub(crate) unsafe fn matmul_panels(
        &self,
        x: &[u32],
        dst: *mut f32,
        m: usize,
        panels: std::ops::Range<usize>,
    ) {
        self.panels_with::<false>(x, dst, m, panels);
    }

    /// [`Self::matmul_panels`] with `tdpbusd` (`INT8`: u8 inputs times i8 weights into
    /// exact i32 sums, whose bits `dst` then holds) or `tdpbf16ps`.
    unsafe fn panels_with<const INT8: bool>(
        &self,
        x: &[u32],
        dst: *mut f32,
        m: usize,
        panels: std::ops::Range<usize>,
    ) {
        let rp = self.steps * T;
        assert!(
            x.len() >= m * rp && panels.end <= self.n.div_ceil(2 * T),
            "amx matmul sizes"
        );
        let mut block = [0f32; 4 * T * T];
        let mut configured = (0, 0);
        // Chunks of MC rows outside (their input tiles stay in L2), then panels, then
        // row blocks: a panel's weight tiles stay in cache while every block of the
        // chunk's rows passes over them (row blocks outside streamed all of a layer's
        // weights from memory once per 16 rows; no chunks streamed all the input, 6.4 MB
        // at 4096 rows, from memory once per panel).
        for m0 in (0..m).step_by(MC) {
            let end = m.min(m0 + MC);
            for p in panels.clone() {
                self.panel::<INT8>(x, dst, m0..end, p, &mut configured, &mut block);
            }
        }
        asm!("tilerelease", options(nostack));
    }

    /// Rows `rows` of panel `p` (see [`Self::matmul`], whose checks this relies on),
    /// loading a tile configuration where the row count differs from `configured`.
    unsafe fn panel<const INT8: bool>(
        &self,
        x: &[u32],
        dst: *mut f32,
        rows: std::ops::Range<usize>,
        p: usize,
        configured: &mut (usize, usize),
        block: &mut [f32; 4 * T * T],
    ) {
        let (n, rp) = (self.n, self.steps * T);
        let b = self.buf[self.start..]
            .as_ptr()
            .add(p * self.steps * 2 * T * T);
        let col = p * 2 * T;
        let cols = (2 * T).min(n - col);
        // A whole panel over several row blocks in blocks of at most KB steps, each
        // block's weight tiles reused by every row block while in L1, the sums kept in
        // `dst` between blocks (an f32 store and load: exact, so the bits are the
        // unblocked ones). Else all the steps at once.
        let blocks = if cols == 2 * T && rows.len() > 2 * T {
            self.steps.div_ceil(KB)
        } else {
            1
        };
        for kb in 0..blocks {
            let steps = self.steps * kb / blocks..self.steps * (kb + 1) / blocks;
            for r0 in rows.clone().step_by(2 * T) {
                let count = (2 * T).min(rows.end - r0);
                let shape = (count.min(T), count - count.min(T));
                if shape != *configured {
                    configure(shape.0, shape.1);
                    *configured = shape;
                }
                // A whole panel's sums go straight to `dst` (rows r0..r0 + count, columns
                // col..col + 32, in bounds); a partial one through `block`.
                let (out, stride) = if cols == 2 * T {
                    (dst.add(r0 * n + col), n)
                } else {
                    (block.as_mut_ptr(), 2 * T)
                };
                // In bounds: row r0 < m, so x + r0 * rp starts a row of x.
                let a = x.as_ptr().add(r0 * rp);
                let go = Steps {
                    steps: steps.clone(),
                    accumulate: kb > 0,
                };
                if shape.1 == 0 {
                    tile_block::<INT8>(a, rp, b, go, out, stride);
                } else {
                    tile_block_2x2::<INT8>(a, rp, b, go, out, stride);
                }
                if cols < 2 * T {
                    for r in 0..count {
                        // In bounds: row r0 + r < m, columns col..col + cols within n.
                        std::ptr::copy_nonoverlapping(
                            block.as_ptr().add(r * 2 * T),
                            dst.add((r0 + r) * n + col),
                            cols,
                        );
                    }
                }
            }
        }
    }
}

/// Which steps (blocks of 16 pairs) a tile block runs, and whether it adds them to the
/// sums already in `out` (a later block of [`AmxWeights::panel`]'s K blocking) rather
/// than starting from zero.
struct Steps {
    steps: std::ops::Range<usize>,
    accumulate: bool,
}

/// The tile configuration of palette 1: tiles 0-3 the sums (rows 0-15 then 16-31, each
/// by columns 0-15 and 16-31; f32 for bf16, i32 for int8), tiles 4 and 5 the input (rows
/// 0-15 and 16-31, 16 pairs), tiles 6 and 7 the weights (16 x 16 pairs).
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// Loads the configuration for `top` (1-16) and `bottom` (0-16) input rows on this
/// thread; tiles with no rows stay unconfigured.
unsafe fn configure(top: usize, bottom: usize) {
    let (t, b) = (top as u8, bottom as u8);
    let mut cfg = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [0; 16],
        rows: [0; 16],
    };
    let tiles = [(0, t), (1, t), (4, t), (2, b), (3, b), (5, b)];
    for (tile, rows) in tiles.into_iter().chain([(6, T as u8), (7, T as u8)]) {
        if rows > 0 {
            cfg.bytes_per_row[tile] = 64;
            cfg.rows[tile] = rows;
        }
    }
    asm!("ldtilecfg [{0}]", in(reg) &cfg as *const Config, options(nostack));
}

/// One block of up to 16 input rows (as configured) times one 32-column panel, into
/// `out` (`stride` f32 to a row, the configured rows written).
unsafe fn tile_block<const INT8: bool>(
    a: *const u32,
    rp: usize,
    b: *const u32,
    go: Steps,
    out: *mut f32,
    stride: usize,
) {
    let a_stride = rp * 4;
    let b_stride = T * 4;
    if go.accumulate {
        asm!(
            "tileloadd tmm0, [{c0} + {sc}*1]",
            "tileloadd tmm1, [{c1} + {sc}*1]",
            c0 = in(reg) out,
            c1 = in(reg) out.add(T),
            sc = in(reg) stride * 4,
            options(nostack),
        );
    } else {
        asm!("tilezero tmm0", "tilezero tmm1", options(nostack));
    }
    for st in go.steps {
        let ap = a.add(st * T);
        let b0 = b.add(st * 2 * T * T);
        macro_rules! step {
            ($op:literal) => {
                asm!(
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    concat!($op, " tmm1, tmm4, tmm7"),
                    a = in(reg) ap,
                    sa = in(reg) a_stride,
                    b0 = in(reg) b0,
                    b1 = in(reg) b0.add(T * T),
                    sb = in(reg) b_stride,
                    options(nostack),
                )
            };
        }
        if INT8 {
            step!("tdpbusd");
        } else {
            step!("tdpbf16ps");
        }
    }
    asm!(
        "tilestored [{c0} + {sc}*1], tmm0",
        "tilestored [{c1} + {sc}*1], tmm1",
        c0 = in(reg) out,
        c1 = in(reg) out.add(T),
        sc = in(reg) stride * 4,
        options(nostack),
    );
}

/// 17 to 32 input rows (16, then the configured rest) times one 32-column panel: four
/// sum tiles, so each input and weight tile loaded feeds two multiplies (the 16-row block
/// loads three tiles for two). Each sum adds the same products in the same order as
/// [`tile_block`], so the bits are the same.
unsafe fn tile_block_2x2<const INT8: bool>(
    a: *const u32,
    rp: usize,
    b: *const u32,
    go: Steps,
    out: *mut f32,
    stride: usize,
) {
    let a_stride = rp * 4;
    let b_stride = T * 4;
    if go.accumulate {
        asm!(
            "tileloadd tmm0, [{c0} + {sc}*1]",
            "tileloadd tmm1, [{c1} + {sc}*1]",
            "tileloadd tmm2, [{c2} + {sc}*1]",
            "tileloadd tmm3, [{c3} + {sc}*1]",
            c0 = in(reg) out,
            c1 = in(reg) out.add(T),
            c2 = in(reg) out.add(T * stride),
            c3 = in(reg) out.add(T * stride + T),
            sc = in(reg) stride * 4,
            options(nostack),
        );
    } else {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack)
        );
    }
    for st in go.steps {
        let ap = a.add(st * T);
        let b0 = b.add(st * 2 * T * T);
        macro_rules! step {
            ($op:literal) => {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    concat!($op, " tmm1, tmm4, tmm7"),
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    concat!($op, " tmm2, tmm5, tmm6"),
                    concat!($op, " tmm3, tmm5, tmm7"),
                    a0 = in(reg) ap,
                    a1 = in(reg) ap.add(T * rp),
                    sa = in(reg) a_stride,
                    b0 = in(reg) b0,
                    b1 = in(reg) b0.add(T * T),
                    sb = in(reg) b_stride,
                    options(nostack),
                )
            };
        }
        if INT8 {
            step!("tdpbusd");
        } else {
            step!("tdpbf16ps");
        }
    }
    asm!(
        "tilestored [{c0} + {sc}*1], tmm0",
        "tilestored [{c1} + {sc}*1], tmm1",
        "tilestored [{c2} + {sc}*1], tmm2",
        "tilestored [{c3} + {sc}*1], tmm3",
        c0 = in(reg) out,
        c1 = in(reg) out.add(T),
        c2 = in(reg) out.add(T * stride),
        c3 = in(reg) out.add(T * stride + T),
        sc = in(reg) stride * 4,
        options(nostack),
    );
}

impl AmxWeights {
    /// int8: `dst[m, n] = x W^T` in exact i32 sums (`tdpbusd`: u8 inputs times i8
    /// weights), `x` given as `m` rows of [`row_pairs`] quads of u8, the tiles built by
    /// [`Self::new`] from [`crate::int8`]'s quad panels (the same shapes as bf16 pairs):
    /// the bf16 kernel's blocking with the other instruction. The sums are exact
    /// integers, so every blocking gives the same ones.
    ///
    /// # Safety
    /// As for [`Self::matmul`], and the CPU has AMX-INT8.
    pub(crate) unsafe fn matmul_i32(&self, x: &[u32], dst: &mut [i32], m: usize) {
        assert!(dst.len() >= m * self.n, "amx int8 matmul sizes");
        let panels = 0..self.n.div_ceil(2 * T);
        // The tile stores write the i32 sums' bits; nothing reads them as f32.
        self.panels_with::<true>(x, dst.as_mut_ptr().cast(), m, panels);
    }
}
