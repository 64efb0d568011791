//! Row gather `dst[r] = src[idx[r]]` (a fill row, or zeros, where `idx[r] == NO_ROW`) and
//! `add_pos` (`x[b, t] += pos[t]`). MAE's masking, unshuffle and class-token handling are
//! gathers through index maps drawn on the CPU. Shaders: `shaders/gather.wgsl`,
//! `shaders/add_pos.wgsl`.
use crate::backend::NO_ROW;
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

pub const GATHER: Shader = Shader { op: "gather", source: include_str!("../../../shaders/gather.wgsl") };
pub const ADD_POS: Shader = Shader { op: "add_pos", source: include_str!("../../../shaders/add_pos.wgsl") };

/// `idx` holds u32 row indices stored bit-for-bit in f32 words.
pub fn gather_rows(src: &[f32], idx: &[f32], fill: Option<&[f32]>, dst: &mut [f32], rows: usize, cols: usize) {
    for r in 0..rows {
        let out = &mut dst[r * cols..(r + 1) * cols];
        match idx[r].to_bits() {
            NO_ROW => match fill {
                Some(f) => out.copy_from_slice(&f[..cols]),
                None => out.fill(0.0),
            },
            s => out.copy_from_slice(&src[s as usize * cols..(s as usize + 1) * cols]),
        }
    }
}

pub fn add_pos(x: &mut [f32], pos: &[f32], batch: usize, tokens: usize, dim: usize) {
    for b in 0..batch {
        for (v, p) in x[b * tokens * dim..(b + 1) * tokens * dim].iter_mut().zip(&pos[..tokens * dim]) {
            *v += p;
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    rows: u32,
    cols: u32,
    has_fill: u32,
}

pub fn gather_rows_gpu(
    gpu: &Gpu,
    src: &GpuBuf,
    idx: &GpuBuf,
    fill: Option<&GpuBuf>,
    dst: &GpuBuf,
    rows: usize,
    cols: usize,
) {
    let params = GatherParams { rows: rows as u32, cols: cols as u32, has_fill: fill.is_some() as u32 };
    let groups = gpu.groups_1d((rows * cols).div_ceil(256));
    let fill = fill.map_or(Bind::Dummy, Bind::Read);
    gpu.dispatch(
        &GATHER.entry("forward"),
        &params,
        &[Bind::Read(src), Bind::Read(idx), fill, Bind::Write(dst)],
        groups,
    );
}

pub fn add_pos_gpu(gpu: &Gpu, x: &GpuBuf, pos: &GpuBuf, batch: usize, tokens: usize, dim: usize) {
    let params = [batch as u32, tokens as u32, dim as u32];
    let groups = gpu.groups_1d((batch * tokens * dim).div_ceil(256));
    gpu.dispatch(&ADD_POS.entry("forward"), &params, &[Bind::Write(x), Bind::Read(pos)], groups);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::block_on;
    use crate::cpu::Cpu;
    use crate::gpu::test_gpu;
    use crate::ops::testing::*;

    fn words(idx: &[u32]) -> Vec<f32> {
        idx.iter().map(|v| f32::from_bits(*v)).collect()
    }

    #[test]
    fn gather_rows_takes_rows_fill_and_zeros() {
        let src = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut dst = vec![9.0; 8];
        gather_rows(&src, &words(&[2, NO_ROW, 0, NO_ROW]), Some(&[7.0, 8.0]), &mut dst, 4, 2);
        assert_eq!(dst, [5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 7.0, 8.0]);
        gather_rows(&src, &words(&[NO_ROW]), None, &mut dst, 1, 2);
        assert_eq!(&dst[..2], &[0.0, 0.0]);
    }

    #[test]
    fn gpu_gather_and_add_pos_match_reference_on_awkward_sizes() {
        let Some(gpu) = test_gpu() else { return };
        let (rows_in, rows, cols) = (17, 23, 65);
        let src = randn(rows_in * cols, 1);
        let fill = randn(cols, 2);
        let idx: Vec<u32> = (0..rows).map(|r| if r % 4 == 3 { NO_ROW } else { ((r * 7) % rows_in) as u32 }).collect();
        for with_fill in [true, false] {
            let mut want = vec![0.0; rows * cols];
            gather_rows(&src, &words(&idx), with_fill.then_some(&fill[..]), &mut want, rows, cols);
            let got = Cpu.upload(&want);
            let g = gpu.alloc(rows * cols);
            let gfill = gpu.upload(&fill);
            gpu.gather_rows(&gpu.upload(&src), &gpu.upload_u32(&idx), with_fill.then_some(&gfill), &g, rows, cols);
            assert_close("gather", &block_on(gpu.read(&g)), &block_on(Cpu.read(&got)), 0.0, 0.0);
        }
        let (batch, tokens, dim) = (3, 17, 5);
        let x = randn(batch * tokens * dim, 3);
        let pos = randn(tokens * dim, 4);
        let mut want = x.clone();
        add_pos(&mut want, &pos, batch, tokens, dim);
        let gx = gpu.upload(&x);
        gpu.add_pos(&gx, &gpu.upload(&pos), batch, tokens, dim);
        assert_close("add_pos", &block_on(gpu.read(&gx)), &want, 1e-6, 0.0);
    }
}
