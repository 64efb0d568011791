// torch.optim.AdamW (decoupled weight decay, amsgrad=False), one step, with the gradient
// scaled by the clip coefficient coef[0] when given:
//   p ← p·(1 − lr·wd);  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;
//   p ← p − (lr / (1 − β1ᵗ)) · m / (sqrt(v) / sqrt(1 − β2ᵗ) + eps).
// The bias corrections lr/(1 − β1ᵗ) and sqrt(1 − β2ᵗ) come precomputed in Params (the
// host computes them exactly as the CPU reference does). Gradient clipping, as
// clip_grad_norm_: sum_squares writes Σ g² of one tensor to sums[slot]; clip_coef turns
// the slots into coef = [min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖].
//
// Parallel plan: `update` runs one invocation per element. `sum_squares_partials` runs
// WG invocations per workgroup, each striding over the workgroup's chunk, then a tree
// in workgroup memory writes one partial per workgroup; `sum_squares_final` is one
// workgroup reducing the partials the same way into sums[slot]. `clip_coef` is one
// workgroup reducing the (few) slots.

override WG: u32 = 256u; // a power of two

struct Params {
    n: u32, // elements (update, sum_squares_partials) or partials / slots (final, clip_coef)
    slot: u32, // sum_squares_final: where the total goes
    chunk: u32, // sum_squares_partials: elements per workgroup
    has_coef: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32, // lr / (1 − β1ᵗ)
    bc2_sqrt: f32, // sqrt(1 − β2ᵗ)
    max_norm: f32, // clip_coef
}

@group(0) @binding(0) var<uniform> p: Params;

// update(param, grad, m, v, coef)
@group(0) @binding(1) var<storage, read_write> param: array<f32>; // [n]
@group(0) @binding(2) var<storage, read> grad: array<f32>; // [n]
@group(0) @binding(3) var<storage, read_write> m: array<f32>; // [n]
@group(0) @binding(4) var<storage, read_write> v: array<f32>; // [n]
@group(0) @binding(5) var<storage, read> coef: array<f32>; // [2], read when has_coef

// sum_squares_partials(x, partials)
@group(0) @binding(1) var<storage, read> x: array<f32>; // [n]
@group(0) @binding(2) var<storage, read_write> partials: array<f32>; // [workgroups]

// sum_squares_final(partials, sums)
@group(0) @binding(1) var<storage, read> fin_partials: array<f32>; // [n]
@group(0) @binding(2) var<storage, read_write> sums: array<f32>; // [slots]

// clip_coef(sums, coef)
@group(0) @binding(1) var<storage, read> clip_sums: array<f32>; // [n]
@group(0) @binding(2) var<storage, read_write> clip_out: array<f32>; // [2]

var<workgroup> red: array<f32, WG>;

fn workgroup_sum(li: u32, s: f32) -> f32 {
    red[li] = s;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if li < half {
            red[li] += red[li + half];
        }
        workgroupBarrier();
    }
    return red[0];
}

@compute @workgroup_size(WG)
fn update(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if i >= p.n {
        return;
    }
    var g = grad[i];
    if p.has_coef != 0u {
        g *= coef[0];
    }
    let w = param[i] * (1.0 - p.lr * p.weight_decay);
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = w - p.step_size * mi / (sqrt(vi) / p.bc2_sqrt + p.eps);
}

@compute @workgroup_size(WG)
fn sum_squares_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let start = wid.x * p.chunk;
    let end = min(start + p.chunk, p.n);
    var s = 0.0;
    for (var i = start + li; i < end; i += WG) {
        let e = x[i];
        s += e * e;
    }
    let total = workgroup_sum(li, s);
    if li == 0u {
        partials[wid.x] = total;
    }
}

@compute @workgroup_size(WG)
fn sum_squares_final(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var i = li; i < p.n; i += WG) {
        s += fin_partials[i];
    }
    let total = workgroup_sum(li, s);
    if li == 0u {
        sums[p.slot] = total;
    }
}

@compute @workgroup_size(WG)
fn clip_coef(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var i = li; i < p.n; i += WG) {
        s += clip_sums[i];
    }
    let norm = sqrt(workgroup_sum(li, s));
    if li == 0u {
        clip_out[0] = min(1.0, p.max_norm / (norm + 1e-6));
        clip_out[1] = norm;
    }
}
