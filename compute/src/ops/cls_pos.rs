//! Prepend the class token and add position embeddings (timm's `_pos_embed` with a class
//! token and `no_embed_class=False`): `x = cat(cls, patches) + pos`.
//! Shader: `shaders/cls_pos.wgsl`.
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

#[allow(clippy::too_many_arguments)]
pub fn cls_pos_forward(patches: &[f32], cls: &[f32], pos: &[f32], x: &mut [f32], b: usize, l: usize, d: usize) {
    let n = l + 1;
    for s in 0..b {
        for t in 0..n {
            for c in 0..d {
                let v = if t == 0 { cls[c] } else { patches[(s * l + t - 1) * d + c] };
                x[(s * n + t) * d + c] = v + pos[t * d + c];
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn cls_pos_backward(
    dx: &[f32],
    dpatches: &mut [f32],
    dcls: &mut [f32],
    mut dpos: Option<&mut [f32]>,
    b: usize,
    l: usize,
    d: usize,
) {
    let n = l + 1;
    for s in 0..b {
        for t in 0..n {
            for c in 0..d {
                let g = dx[(s * n + t) * d + c];
                if t == 0 {
                    dcls[c] += g;
                } else {
                    dpatches[(s * l + t - 1) * d + c] += g;
                }
                if let Some(dpos) = dpos.as_deref_mut() {
                    dpos[t * d + c] += g;
                }
            }
        }
    }
}

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "cls_pos", source: include_str!("../../../shaders/cls_pos.wgsl") };

#[allow(clippy::too_many_arguments)]
pub fn cls_pos_forward_gpu(
    gpu: &Gpu,
    patches: &GpuBuf,
    cls: &GpuBuf,
    pos: &GpuBuf,
    x: &GpuBuf,
    b: usize,
    l: usize,
    d: usize,
) {
    let params = [b as u32, l as u32, d as u32, 1];
    let binds = [Bind::Read(patches), Bind::Read(cls), Bind::Read(pos), Bind::Write(x)];
    gpu.dispatch(&SHADER.entry("forward"), &params, &binds, gpu.groups_1d((b * (l + 1) * d).div_ceil(256)));
}

#[allow(clippy::too_many_arguments)]
pub fn cls_pos_backward_gpu(
    gpu: &Gpu,
    dx: &GpuBuf,
    dpatches: &GpuBuf,
    dcls: &GpuBuf,
    dpos: Option<&GpuBuf>,
    b: usize,
    l: usize,
    d: usize,
) {
    // The shader declares dpos writable; without one it gets a scratch word it never touches.
    let scratch;
    let dpos_bind = match dpos {
        Some(g) => Bind::Write(g),
        None => {
            scratch = gpu.alloc_uncleared(1);
            Bind::Write(&scratch)
        }
    };
    let params = [b as u32, l as u32, d as u32, dpos.is_some() as u32];
    let binds = [Bind::Read(dx), Bind::Write(dpatches), Bind::Write(dcls), dpos_bind];
    gpu.dispatch(&SHADER.entry("backward_patches"), &params, &binds, gpu.groups_1d((b * l * d).div_ceil(256)));
    gpu.dispatch(&SHADER.entry("backward_pos"), &params, &binds, gpu.groups_1d(((l + 1) * d).div_ceil(256)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cls_pos_backward_sums_over_batch() {
        let (b, l, d) = (2, 2, 1);
        let dx = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
        let (mut dp, mut dc, mut dpos) = (vec![0.0; 4], vec![0.0; 1], vec![0.0; 3]);
        cls_pos_backward(&dx, &mut dp, &mut dc, Some(&mut dpos), b, l, d);
        assert_eq!(dp, [2.0, 3.0, 20.0, 30.0]);
        assert_eq!(dc, [11.0]);
        assert_eq!(dpos, [11.0, 22.0, 33.0]);
        let mut x = vec![0.0; 6];
        cls_pos_forward(&[1.0, 2.0, 3.0, 4.0], &[9.0], &[0.5, 0.25, 0.125], &mut x, b, l, d);
        assert_eq!(x, [9.5, 1.25, 2.125, 9.5, 3.25, 4.125]);
    }

    #[test]
    fn gpu_cls_pos_matches_reference_with_and_without_dpos() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        use crate::ops::testing::{assert_close, randn};
        let (b, l, d) = (3, 16, 70);
        let n = l + 1;
        let (patches, cls, pos) = (randn(b * l * d, 1), randn(d, 2), randn(n * d, 3));
        let mut x = vec![0.0; b * n * d];
        cls_pos_forward(&patches, &cls, &pos, &mut x, b, l, d);
        let (gp, gc, gpos, gx) = (gpu.upload(&patches), gpu.upload(&cls), gpu.upload(&pos), gpu.alloc(b * n * d));
        gpu.cls_pos_forward(&gp, &gc, &gpos, &gx, b, l, d);
        assert_close("x", &crate::block_on(gpu.read(&gx)), &x, 0.0, 0.0);

        let dx = randn(b * n * d, 4);
        for with_pos in [true, false] {
            let (dp0, dc0, dpos0) = (randn(b * l * d, 5), randn(d, 6), randn(n * d, 7));
            let (mut dp, mut dc, mut dpos) = (dp0.clone(), dc0.clone(), dpos0.clone());
            cls_pos_backward(&dx, &mut dp, &mut dc, with_pos.then_some(&mut dpos[..]), b, l, d);
            let (gdx, gdp, gdc, gdpos) = (gpu.upload(&dx), gpu.upload(&dp0), gpu.upload(&dc0), gpu.upload(&dpos0));
            gpu.cls_pos_backward(&gdx, &gdp, &gdc, with_pos.then_some(&gdpos), b, l, d);
            assert_close("dpatches", &crate::block_on(gpu.read(&gdp)), &dp, 1e-6, 1e-6);
            assert_close("dcls", &crate::block_on(gpu.read(&gdc)), &dc, 1e-5, 1e-5);
            assert_close("dpos", &crate::block_on(gpu.read(&gdpos)), &dpos, 1e-5, 1e-5);
        }
    }
}
