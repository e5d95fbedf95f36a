//! The trainer's CUDA kernels: each dense layer's bias, activations and phase 1's hard
//! selection as one NVRTC kernel forward and one or two backward, after dfdx's cuBLAS
//! matmul; and gradient clipping's sum of squares and scaling. A step then stays on the GPU
//! except for the loss value, the logits read for the Gumbel argmax and the clipping norm.
//!
//! dfdx 0.13 lends no view of a tensor's device buffer; `Tensor::storage` comes from
//! `scripts/dfdx-0.13-storage.patch`, which `scripts/cuda.sh` applies (see the README's
//! GPU section). Activations outside the paper's six (plugins) take the device-generic
//! path of [`crate::ops::generic`].

use std::sync::Arc;

use cudarc::driver::{
    CudaDevice, CudaFunction, CudaSlice, DevicePtr, DeviceSlice, DriverError, LaunchAsync,
    LaunchConfig,
};
use dfdx::prelude::*;
use dfdx::tensor::{CudaError, Gradients};
use smartmixed_core::builtin::{ELU_ALPHA, LEAKY_RELU_SLOPE, SELU_ALPHA, SELU_SCALE};
use smartmixed_core::Activation;

use crate::kernels::CLAMP;
use crate::ops::{generic, LayerActivation, Matrix};

/// The module's name in the CUDA context, and its kernels.
const MODULE: &str = "smartmixed_train";
const KERNELS: [&str; 7] = [
    "bias_fwd",
    "grouped_fwd",
    "selective_fwd",
    "dense_bwd",
    "soft_bwd",
    "sum_squares",
    "scale",
];

/// The activations the kernels evaluate, by the code they are given (`act` below).
const CODED: [&str; 6] = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu"];

/// Threads per block of every launch.
const BLOCK: u32 = 256;
/// Blocks of the sum of squares: its partial sums, added on the host in order.
const SUM_BLOCKS: u32 = 240;

/// CUDA C for NVRTC; the constants are the registry's (`smartmixed_core::builtin`).
fn source() -> String {
    format!(
        r#"
#define CLAMP {CLAMP:?}f
// PyTorch's definitions and derivatives, as smartmixed_core::builtin registers them.
__device__ float act(int code, float x, float* d) {{
    float y;
    switch (code) {{
    case 0: y = x > 0.0f ? x : 0.0f; *d = x > 0.0f ? 1.0f : 0.0f; break;
    case 1: y = 1.0f / (1.0f + expf(-x)); *d = y * (1.0f - y); break;
    case 2: y = tanhf(x); *d = 1.0f - y * y; break;
    case 3: y = x > 0.0f ? x : {LEAKY_RELU_SLOPE:?}f * x; *d = x > 0.0f ? 1.0f : {LEAKY_RELU_SLOPE:?}f; break;
    case 4: if (x > 0.0f) {{ y = x; *d = 1.0f; }} else {{ y = {ELU_ALPHA:?}f * expm1f(x); *d = y + {ELU_ALPHA:?}f; }} break;
    default: if (x > 0.0f) {{ y = {SELU_SCALE:?}f * x; *d = {SELU_SCALE:?}f; }}
             else {{ y = {SA:?}f * expm1f(x); *d = y + {SA:?}f; }}
    }}
    return y;
}}
// Rust's f32::clamp: NaN stays NaN.
__device__ float clamp(float v) {{ return v < -CLAMP ? -CLAMP : (v > CLAMP ? CLAMP : v); }}

extern "C" __global__ void bias_fwd(const float* pre, const float* bias, float* out, int rows, int n) {{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (long)rows * n) out[i] = pre[i] + bias[i % n];
}}
// out = act_code[col](pre + bias); deriv (when not null) = its derivative.
extern "C" __global__ void grouped_fwd(const float* pre, const float* bias, const int* code,
                                       float* out, float* deriv, int rows, int n) {{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * n) return;
    int c = i % n;
    float d;
    out[i] = act(code[c], pre[i] + bias[c], &d);
    if (deriv) deriv[i] = d;
}}
// Phase 1 with the hard sample: out = clamp(act_chosen(z)). With values (not null), every
// candidate's clamped value goes to values[row][j][col] and the chosen one's derivative,
// zero where the clamp is active, to deriv (the CPU kernel's layout and rules).
extern "C" __global__ void selective_fwd(const float* pre, const float* bias, const int* codes,
                                         float* out, float* values, float* deriv,
                                         int rows, int n, int p) {{
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * n) return;
    long r = i / n;
    int c = i % n;
    float z = pre[i] + bias[c];
    int chosen = codes[p + c];
    float d;
    if (!values) {{ out[i] = clamp(act(codes[chosen], z, &d)); return; }}
    for (int j = 0; j < p; j++) {{
        float v = act(codes[j], z, &d);
        bool inside = v >= -CLAMP && v <= CLAMP;
        v = clamp(v);
        values[(r * p + j) * n + c] = v;
        if (j == chosen) {{ out[i] = v; deriv[i] = inside ? d : 0.0f; }}
    }}
}}
// g_pre += g_out * deriv (deriv null: g_out), g_bias[col] += the column's sum, in row order.
extern "C" __global__ void dense_bwd(const float* g_out, const float* deriv, float* g_pre,
                                     float* g_bias, int rows, int n) {{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n) return;
    float s = 0.0f;
    for (long r = 0; r < rows; r++) {{
        long i = r * n + c;
        float g = deriv ? g_out[i] * deriv[i] : g_out[i];
        g_pre[i] += g;
        s += g;
    }}
    g_bias[c] += s;
}}
// Straight-through: g_soft[j][col] += sum over rows of g_out * values[row][j][col].
extern "C" __global__ void soft_bwd(const float* g_out, const float* values, float* g_soft,
                                    int rows, int n, int p) {{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= p * n) return;
    int j = k / n, c = k % n;
    float s = 0.0f;
    for (long r = 0; r < rows; r++) s += g_out[r * n + c] * values[(r * p + j) * n + c];
    g_soft[k] += s;
}}
// One partial sum of squares (in f64) per block, reduced in a fixed order.
extern "C" __global__ void sum_squares(const float* x, long len, double* partial) {{
    __shared__ double s[{BLOCK}];
    double acc = 0.0;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += (long)gridDim.x * blockDim.x) {{
        double v = x[i];
        acc += v * v;
    }}
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {{
        if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }}
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}}
extern "C" __global__ void scale(float* x, long len, float factor) {{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += (long)gridDim.x * blockDim.x)
        x[i] *= factor;
}}
"#,
        SA = SELU_SCALE * SELU_ALPHA,
    )
}

/// A device error in an op that cannot return one (dfdx's non-`try` ops panic likewise).
fn or_panic<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("CUDA: {e:?}"))
}

/// One of the module's kernels, compiled and loaded into `dev`'s context on first use.
fn kernel(dev: &Arc<CudaDevice>, name: &str) -> Result<CudaFunction, DriverError> {
    if !dev.has_func(MODULE, name) {
        let ptx = cudarc::nvrtc::compile_ptx(source())
            .unwrap_or_else(|e| panic!("the trainer's CUDA kernels do not compile: {e:?}"));
        dev.load_ptx(ptx, MODULE, &KERNELS)?;
    }
    Ok(dev
        .get_func(MODULE, name)
        .unwrap_or_else(|| panic!("kernel {name} is not in module {MODULE}")))
}

/// A launch over `len` items, one thread each.
fn over(len: usize) -> LaunchConfig {
    // Counted in usize: `len as u32` wrapped at 2^32 items and covered only part of them.
    let blocks = u32::try_from(len.div_ceil(BLOCK as usize).max(1)).unwrap_or_else(|_| {
        panic!("CUDA: a launch over {len} items, more blocks than a grid holds")
    });
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A buffer's address for a kernel argument (the kernels read or write through it; the
/// buffer outlives the launch, whose stream orders every later free).
fn ptr(v: &CudaSlice<f32>) -> u64 {
    *v.device_ptr()
}

/// The kernels' code of each activation, or `None` if one is not theirs.
fn codes<'a>(acts: impl IntoIterator<Item = &'a &'static Activation>) -> Option<Vec<i32>> {
    acts.into_iter()
        .map(|a| CODED.iter().position(|&n| n == a.name).map(|c| c as i32))
        .collect()
}

/// What the backward pass needs from the forward.
enum Saved {
    Identity,
    /// Each neuron's derivative.
    Grouped(CudaSlice<f32>),
    /// Every candidate's value, the chosen derivative, the soft sample and the pool size.
    Selective(CudaSlice<f32>, CudaSlice<f32>, Matrix<Cuda>, usize),
}

/// [`crate::TrainDevice::dense`] on CUDA.
pub fn dense<T: Tape<f32, Cuda>>(
    x: Matrix<Cuda, T>,
    weight: &Matrix<Cuda>,
    bias: &Matrix<Cuda>,
    activation: LayerActivation<'_, Cuda, T>,
) -> Matrix<Cuda, T> {
    let (b, n) = (x.shape().0, weight.shape().0);
    // Per neuron for the grouped layer; the pool's then each neuron's choice for phase 1.
    let table = match &activation {
        LayerActivation::Identity => Some(Vec::new()),
        LayerActivation::Grouped(groups) => {
            codes(groups.iter().map(|g| &g.activation)).map(|c: Vec<i32>| {
                let mut per_neuron = vec![0; n];
                for (g, code) in groups.iter().zip(c) {
                    per_neuron[g.range()].fill(code);
                }
                per_neuron
            })
        }
        LayerActivation::Selective { pool, choices, .. } => codes(pool.iter()).map(|mut c| {
            c.extend(choices.iter().map(|&k| k as i32));
            c
        }),
    };
    let Some(table) = table else {
        return generic::dense(x, weight, bias, activation);
    };
    let pre = x.matmul(weight.retaped::<T>().permute::<_, Axes2<1, 0>>());
    let (pre, mut tape) = pre.split_tape();
    let dev = pre.storage().device();
    let train = T::OWNS_TAPE;
    let out: Matrix<Cuda> = pre.device().zeros_like(&(b, n));
    let (p_pre, p_bias, p_out) = (ptr(pre.storage()), ptr(bias.storage()), ptr(out.storage()));
    let (bi, ni) = (b as i32, n as i32);
    let alloc = |len: usize| or_panic(dev.alloc_zeros::<f32>(len));
    let saved = match activation {
        LayerActivation::Identity => {
            let f = or_panic(kernel(&dev, "bias_fwd"));
            or_panic(unsafe { f.launch(over(b * n), (p_pre, p_bias, p_out, bi, ni)) });
            Saved::Identity
        }
        LayerActivation::Grouped(_) => {
            let code = or_panic(dev.htod_copy(table));
            let deriv = if train { Some(alloc(b * n)) } else { None };
            let p_deriv = deriv.as_ref().map_or(0, ptr);
            let f = or_panic(kernel(&dev, "grouped_fwd"));
            let args = (p_pre, p_bias, *code.device_ptr(), p_out, p_deriv, bi, ni);
            or_panic(unsafe { f.launch(over(b * n), args) });
            deriv.map_or(Saved::Identity, Saved::Grouped)
        }
        LayerActivation::Selective { soft, pool, .. } => {
            let (soft, soft_tape) = soft.split_tape();
            tape = std::mem::take(&mut tape).merge(soft_tape);
            let p = pool.len();
            let code = or_panic(dev.htod_copy(table));
            let kept = train.then(|| (alloc(p * b * n), alloc(b * n)));
            let (p_values, p_deriv) = kept.as_ref().map_or((0, 0), |(v, d)| (ptr(v), ptr(d)));
            let f = or_panic(kernel(&dev, "selective_fwd"));
            let args = (
                p_pre,
                p_bias,
                *code.device_ptr(),
                p_out,
                p_values,
                p_deriv,
                bi,
                ni,
                p as i32,
            );
            or_panic(unsafe { f.launch(over(b * n), args) });
            match kept {
                Some((values, deriv)) => Saved::Selective(values, deriv, soft, p),
                None => Saved::Identity,
            }
        }
    };
    if !train {
        return out.put_tape(tape);
    }
    let (out_g, bias_g) = (out.clone(), bias.clone());
    tape.add_backward_op(move |grads| backward(grads, &out_g, &pre, &bias_g, &saved, (b, n)));
    out.put_tape(tape)
}

/// The pre-activation's, the bias's and (phase 1) the soft sample's gradients from the
/// output's.
fn backward(
    grads: &mut Gradients<f32, Cuda>,
    out: &Matrix<Cuda>,
    pre: &Matrix<Cuda>,
    bias: &Matrix<Cuda>,
    saved: &Saved,
    (b, n): (usize, usize),
) -> Result<(), CudaError> {
    let g_out = ptr(grads.get_or_alloc_mut(out)?);
    let g_pre = ptr(grads.get_or_alloc_mut(pre)?);
    let g_bias = ptr(grads.get_or_alloc_mut(bias)?);
    let dev = out.storage().device();
    let p_deriv = match saved {
        Saved::Identity => 0,
        Saved::Grouped(d) | Saved::Selective(_, d, ..) => ptr(d),
    };
    let f = kernel(&dev, "dense_bwd")?;
    let (bi, ni) = (b as i32, n as i32);
    unsafe { f.launch(over(n), (g_out, p_deriv, g_pre, g_bias, bi, ni)) }?;
    if let Saved::Selective(values, _, soft, p) = saved {
        let g_soft = ptr(grads.get_or_alloc_mut(soft)?);
        let f = kernel(&dev, "soft_bwd")?;
        let args = (g_out, ptr(values), g_soft, bi, ni, *p as i32);
        unsafe { f.launch(over(p * n), args) }?;
    }
    Ok(())
}

/// [`crate::TrainDevice::sum_squares`]: per-block sums in f64, added here in block order
/// (the same total on every run).
pub fn sum_squares(grad: &CudaSlice<f32>) -> Result<f64, CudaError> {
    let dev = grad.device();
    let mut partial = dev.alloc_zeros::<f64>(SUM_BLOCKS as usize)?;
    let f = kernel(&dev, "sum_squares")?;
    let cfg = LaunchConfig {
        grid_dim: (SUM_BLOCKS, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe { f.launch(cfg, (ptr(grad), grad.len() as i64, &mut partial)) }?;
    Ok(dev.dtoh_sync_copy(&partial)?.iter().sum())
}

/// [`crate::TrainDevice::scale`].
pub fn scale(grad: &mut CudaSlice<f32>, factor: f32) -> Result<(), CudaError> {
    let dev = grad.device();
    let f = kernel(&dev, "scale")?;
    let len = grad.len();
    let cfg = over(len.min((SUM_BLOCKS * BLOCK) as usize));
    unsafe { f.launch(cfg, (ptr(grad), len as i64, factor)) }?;
    Ok(())
}
