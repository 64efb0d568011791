//! Swin's relative position bias (and shift mask) added to window-attention scores:
//! `scores[bw, h, i, j] += table[index[i·n + j], h] + mask[bw % nw, i, j]`, in place
//! between `q·kᵀ·scale` and the softmax. Backward passes the scores gradient through and
//! reduces it into the table through [`Csr`], each table row's list of `(i, j)`.
//! Shader: `shaders/rel_pos_bias.wgsl`.
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

pub const SHADER: Shader = Shader { op: "rel_pos_bias", source: include_str!("../../../shaders/rel_pos_bias.wgsl") };

/// timm's `get_relative_position_index(wh, ww)`: `[n, n]` with `n = wh·ww`, values in
/// `0..(2wh − 1)(2ww − 1)`.
pub fn relative_position_index(wh: usize, ww: usize) -> Vec<u32> {
    let n = wh * ww;
    let mut index = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dy = (i / ww) as isize - (j / ww) as isize + wh as isize - 1;
            let dx = (i % ww) as isize - (j % ww) as isize + ww as isize - 1;
            index.push((dy * (2 * ww as isize - 1) + dx) as u32);
        }
    }
    index
}

/// For each table row `t`, the flat positions `i·n + j` whose index is `t`:
/// `entries[offsets[t]..offsets[t + 1]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    pub offsets: Vec<u32>,
    pub entries: Vec<u32>,
}

impl Csr {
    pub fn of_index(index: &[u32], rows: usize) -> Csr {
        let mut offsets = vec![0u32; rows + 1];
        for &t in index {
            offsets[t as usize + 1] += 1;
        }
        for t in 0..rows {
            offsets[t + 1] += offsets[t];
        }
        let mut next = offsets.clone();
        let mut entries = vec![0u32; index.len()];
        for (ij, &t) in index.iter().enumerate() {
            entries[next[t as usize] as usize] = ij as u32;
            next[t as usize] += 1;
        }
        Csr { offsets, entries }
    }
}

/// `index` holds u32 words stored bit-for-bit in f32 (as every CPU index buffer).
#[allow(clippy::too_many_arguments)]
pub fn rel_pos_bias_forward(
    scores: &mut [f32],
    table: &[f32],
    index: &[f32],
    mask: Option<&[f32]>,
    windows: usize,
    nw: usize,
    heads: usize,
    n: usize,
) {
    let nn = n * n;
    for bw in 0..windows {
        for h in 0..heads {
            let s = &mut scores[(bw * heads + h) * nn..][..nn];
            for ij in 0..nn {
                s[ij] += table[index[ij].to_bits() as usize * heads + h];
                if let Some(m) = mask {
                    s[ij] += m[(bw % nw) * nn + ij];
                }
            }
        }
    }
}

/// `dtable[t, h] += Σ_bw Σ_{ij ∈ csr(t)} dscores[bw, h, ij]` (offsets, entries as u32 words).
#[allow(clippy::too_many_arguments)]
pub fn rel_pos_bias_backward(
    dscores: &[f32],
    offsets: &[f32],
    entries: &[f32],
    dtable: &mut [f32],
    windows: usize,
    heads: usize,
    n: usize,
    rows: usize,
) {
    let nn = n * n;
    for t in 0..rows {
        let (a, b) = (offsets[t].to_bits() as usize, offsets[t + 1].to_bits() as usize);
        for h in 0..heads {
            let mut sum = 0.0;
            for bw in 0..windows {
                let s = &dscores[(bw * heads + h) * nn..][..nn];
                sum += entries[a..b].iter().map(|e| s[e.to_bits() as usize]).sum::<f32>();
            }
            dtable[t * heads + h] += sum;
        }
    }
}

// ---- GPU launchers ----

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    windows: u32,
    nw: u32,
    heads: u32,
    n: u32,
    has_mask: u32,
    rows: u32,
}

#[allow(clippy::too_many_arguments)]
pub fn rel_pos_bias_forward_gpu(
    gpu: &Gpu,
    scores: &GpuBuf,
    table: &GpuBuf,
    index: &GpuBuf,
    mask: Option<&GpuBuf>,
    windows: usize,
    nw: usize,
    heads: usize,
    n: usize,
) {
    let params = Params {
        windows: windows as u32,
        nw: nw as u32,
        heads: heads as u32,
        n: n as u32,
        has_mask: mask.is_some() as u32,
        rows: 0,
    };
    let binds = [Bind::Write(scores), Bind::Read(table), Bind::Read(index), mask.map_or(Bind::Dummy, Bind::Read)];
    gpu.dispatch(&SHADER.entry("forward"), &params, &binds, gpu.groups_1d((windows * heads * n * n).div_ceil(64)));
}

#[allow(clippy::too_many_arguments)]
pub fn rel_pos_bias_backward_gpu(
    gpu: &Gpu,
    dscores: &GpuBuf,
    offsets: &GpuBuf,
    entries: &GpuBuf,
    dtable: &GpuBuf,
    windows: usize,
    heads: usize,
    n: usize,
    rows: usize,
) {
    let params =
        Params { windows: windows as u32, nw: 1, heads: heads as u32, n: n as u32, has_mask: 0, rows: rows as u32 };
    let binds = [Bind::Read(dscores), Bind::Read(offsets), Bind::Read(entries), Bind::Write(dtable)];
    gpu.dispatch(&SHADER.entry("backward"), &params, &binds, gpu.groups_1d(rows * heads));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::block_on;
    use crate::cpu::Cpu;
    use crate::ops::testing::*;

    fn words(v: &[u32]) -> Vec<f32> {
        v.iter().map(|x| f32::from_bits(*x)).collect()
    }

    #[test]
    fn relative_position_index_matches_timm_for_a_2x3_window() {
        // torch: get_relative_position_index(2, 3), first two rows.
        let index = relative_position_index(2, 3);
        assert_eq!(&index[..6], &[7, 6, 5, 2, 1, 0]);
        assert_eq!(&index[6..12], &[8, 7, 6, 3, 2, 1]);
        assert_eq!(*index.iter().max().unwrap(), 3 * 5 - 1);
        let csr = Csr::of_index(&index, 15);
        assert_eq!(csr.offsets[15] as usize, 36);
        assert_eq!(csr.offsets[8] - csr.offsets[7], 6, "the diagonal (0, 0) offset appears n times");
    }

    #[test]
    fn rel_pos_bias_backward_matches_finite_differences() {
        let (wh, ww, heads, nw, windows) = (2, 3, 2, 3, 6);
        let n = wh * ww;
        let rows = (2 * wh - 1) * (2 * ww - 1);
        let index = relative_position_index(wh, ww);
        let csr = Csr::of_index(&index, rows);
        let table = randn(rows * heads, 1);
        let mask: Vec<f32> = randn(nw * n * n, 2).iter().map(|v| if *v > 0.0 { -100.0 } else { 0.0 }).collect();
        let scores0 = randn(windows * heads * n * n, 3);
        let w = randn(scores0.len(), 4);
        let loss = |table: &[f32]| {
            let mut s = scores0.clone();
            rel_pos_bias_forward(&mut s, table, &words(&index), Some(&mask), windows, nw, heads, n);
            // A nonlinear loss, so the check also sees which score each bias lands on.
            s.iter().zip(&w).map(|(a, b)| (*a as f64 * 0.01).tanh() * *b as f64).sum::<f64>()
        };
        let mut s = scores0.clone();
        rel_pos_bias_forward(&mut s, &table, &words(&index), Some(&mask), windows, nw, heads, n);
        let ds: Vec<f32> = s.iter().zip(&w).map(|(a, b)| (1.0 - (a * 0.01).tanh().powi(2)) * 0.01 * b).collect();
        let mut dtable = vec![0.5; rows * heads];
        rel_pos_bias_backward(&ds, &words(&csr.offsets), &words(&csr.entries), &mut dtable, windows, heads, n, rows);
        let fd: Vec<f64> = finite_diff(&table, 1e-2, loss).iter().map(|g| g + 0.5).collect();
        assert_close_f64("dtable (+= onto 0.5)", &dtable, &fd, 1e-4, 1e-3);
    }

    #[test]
    fn gpu_rel_pos_bias_matches_reference_on_awkward_sizes() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        // A 3x5 window (15 tokens, 45 table rows), 3 heads, 7 windows per image, 2 images.
        let (wh, ww, heads, nw) = (3, 5, 3, 7);
        let (n, windows, rows) = (wh * ww, 2 * nw, (2 * wh - 1) * (2 * ww - 1));
        let index = relative_position_index(wh, ww);
        let csr = Csr::of_index(&index, rows);
        let table = randn(rows * heads, 5);
        let mask: Vec<f32> = randn(nw * n * n, 6).iter().map(|v| if *v > 0.5 { -100.0 } else { 0.0 }).collect();
        let scores = randn(windows * heads * n * n, 7);
        let dtable0 = randn(rows * heads, 8);
        for with_mask in [true, false] {
            let m = with_mask.then_some(&mask[..]);
            let mut want = scores.clone();
            rel_pos_bias_forward(&mut want, &table, &words(&index), m, windows, nw, heads, n);
            let mut want_dt = dtable0.clone();
            rel_pos_bias_backward(
                &scores,
                &words(&csr.offsets),
                &words(&csr.entries),
                &mut want_dt,
                windows,
                heads,
                n,
                rows,
            );

            let (gs, gm) = (gpu.upload(&scores), gpu.upload(&mask));
            let gi = gpu.upload_u32(&index);
            gpu.rel_pos_bias_forward(&gs, &gpu.upload(&table), &gi, with_mask.then_some(&gm), windows, nw, heads, n);
            assert_close("scores", &block_on(gpu.read(&gs)), &want, 1e-6, 1e-6);
            let gdt = gpu.upload(&dtable0);
            let (go, ge) = (gpu.upload_u32(&csr.offsets), gpu.upload_u32(&csr.entries));
            gpu.rel_pos_bias_backward(&gpu.upload(&scores), &go, &ge, &gdt, windows, heads, n, rows);
            assert_close("dtable", &block_on(gpu.read(&gdt)), &want_dt, 1e-4, 1e-5);
        }
        // The CPU backend runs the same reference.
        let cs = Cpu.upload(&scores);
        Cpu.rel_pos_bias_forward(&cs, &Cpu.upload(&table), &Cpu.upload_u32(&index), None, windows, nw, heads, n);
        let mut want = scores.clone();
        rel_pos_bias_forward(&mut want, &table, &words(&index), None, windows, nw, heads, n);
        assert_close("cpu backend", &block_on(Cpu.read(&cs)), &want, 0.0, 0.0);
    }
}
