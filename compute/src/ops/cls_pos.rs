//! Prepend the class token and add position embeddings (timm's `_pos_embed` with a class
//! token and `no_embed_class=False`): `x = cat(cls, patches) + pos`.
//! Shader: `shaders/cls_pos.wgsl`.

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
}
// GPU-STUB
#[allow(clippy::too_many_arguments, unused)]
pub fn cls_pos_forward_gpu(
    g: &crate::gpu::Gpu,
    patches: &crate::gpu::GpuBuf,
    cls: &crate::gpu::GpuBuf,
    pos: &crate::gpu::GpuBuf,
    x: &crate::gpu::GpuBuf,
    b: usize,
    l: usize,
    d: usize,
) {
    unimplemented!()
}
#[allow(clippy::too_many_arguments, unused)]
pub fn cls_pos_backward_gpu(
    g: &crate::gpu::Gpu,
    dx: &crate::gpu::GpuBuf,
    dp: &crate::gpu::GpuBuf,
    dc: &crate::gpu::GpuBuf,
    dpos: Option<&crate::gpu::GpuBuf>,
    b: usize,
    l: usize,
    d: usize,
) {
    unimplemented!()
}
