//! Cut an image batch `[b, c, h, w]` into non-overlapping `p×p` patches
//! `[b, gh·gw, c·p·p]` (grid `gh = h/p`, `gw = w/p`, patches in row-major grid order).
//! A Conv2d with stride = kernel = p is then one matmul with its weight `[D, c·p·p]`;
//! MAE's targets use the `(py, px, c)` order. The map is a permutation, so backward is
//! the inverse scatter. Shader: `shaders/patchify.wgsl`.
use crate::backend::PatchOrder;
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

/// Index in the image of element `e` of patch `l` in sample `n`.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn source_index(n: usize, l: usize, e: usize, c: usize, h: usize, w: usize, p: usize, order: PatchOrder) -> usize {
    let gw = w / p;
    let (gy, gx) = (l / gw, l % gw);
    let (ch, py, px) = match order {
        PatchOrder::ChannelFirst => (e / (p * p), (e / p) % p, e % p),
        PatchOrder::ChannelLast => (e % c, e / (p * c), (e / c) % p),
    };
    ((n * c + ch) * h + gy * p + py) * w + gx * p + px
}

#[allow(clippy::too_many_arguments)]
pub fn patchify_forward(
    img: &[f32],
    out: &mut [f32],
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    order: PatchOrder,
) {
    let (l, e) = ((h / p) * (w / p), c * p * p);
    for n in 0..b {
        for li in 0..l {
            for ei in 0..e {
                out[(n * l + li) * e + ei] = img[source_index(n, li, ei, c, h, w, p, order)];
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn patchify_backward(
    dout: &[f32],
    dimg: &mut [f32],
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    order: PatchOrder,
) {
    let (l, e) = ((h / p) * (w / p), c * p * p);
    for n in 0..b {
        for li in 0..l {
            for ei in 0..e {
                dimg[source_index(n, li, ei, c, h, w, p, order)] += dout[(n * l + li) * e + ei];
            }
        }
    }
}

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "patchify", source: include_str!("../../../shaders/patchify.wgsl") };

#[allow(clippy::too_many_arguments)]
fn launch(
    gpu: &Gpu,
    entry: &'static str,
    src: &GpuBuf,
    dst: &GpuBuf,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    order: PatchOrder,
) {
    let params = [b, c, h, w, p, order as usize].map(|v| v as u32);
    let total = b * c * (h / p) * (w / p) * p * p;
    gpu.dispatch(
        &SHADER.entry(entry),
        &params,
        &[Bind::Read(src), Bind::Write(dst)],
        gpu.groups_1d(total.div_ceil(256)),
    );
}

#[allow(clippy::too_many_arguments)]
pub fn patchify_forward_gpu(
    gpu: &Gpu,
    img: &GpuBuf,
    out: &GpuBuf,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    order: PatchOrder,
) {
    launch(gpu, "forward", img, out, b, c, h, w, p, order);
}

#[allow(clippy::too_many_arguments)]
pub fn patchify_backward_gpu(
    gpu: &Gpu,
    dout: &GpuBuf,
    dimg: &GpuBuf,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    order: PatchOrder,
) {
    launch(gpu, "backward", dout, dimg, b, c, h, w, p, order);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patchify_orders_match_conv_and_mae() {
        // 1 sample, 2 channels, 4×4 image, patch 2: value = c*100 + y*10 + x.
        let img: Vec<f32> = (0..2 * 16).map(|i| ((i / 16) * 100 + ((i % 16) / 4) * 10 + i % 4) as f32).collect();
        let mut out = vec![0.0; 4 * 8];
        patchify_forward(&img, &mut out, 1, 2, 4, 4, 2, PatchOrder::ChannelFirst);
        // patch 1 = grid (0, 1): conv order (c, py, px)
        assert_eq!(&out[8..16], &[2.0, 3.0, 12.0, 13.0, 102.0, 103.0, 112.0, 113.0]);
        patchify_forward(&img, &mut out, 1, 2, 4, 4, 2, PatchOrder::ChannelLast);
        // MAE order (py, px, c)
        assert_eq!(&out[8..16], &[2.0, 102.0, 3.0, 103.0, 12.0, 112.0, 13.0, 113.0]);
    }

    #[test]
    fn patchify_backward_inverts_forward() {
        let img: Vec<f32> = (0..2 * 3 * 6 * 4).map(|i| i as f32).collect();
        for order in [PatchOrder::ChannelFirst, PatchOrder::ChannelLast] {
            let mut out = vec![0.0; img.len()];
            patchify_forward(&img, &mut out, 2, 3, 6, 4, 2, order);
            let mut back = vec![0.0; img.len()];
            patchify_backward(&out, &mut back, 2, 3, 6, 4, 2, order);
            assert_eq!(back, img);
        }
    }

    #[test]
    fn gpu_patchify_matches_reference_in_both_orders() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        let (b, c, h, w, p) = (2, 3, 12, 8, 4);
        let img = crate::ops::testing::randn(b * c * h * w, 1);
        let dimg0 = crate::ops::testing::randn(img.len(), 2);
        for order in [PatchOrder::ChannelFirst, PatchOrder::ChannelLast] {
            let mut out = vec![0.0; img.len()];
            patchify_forward(&img, &mut out, b, c, h, w, p, order);
            let mut dimg = dimg0.clone();
            patchify_backward(&out, &mut dimg, b, c, h, w, p, order);
            let (gimg, gout, gdimg) = (gpu.upload(&img), gpu.alloc(img.len()), gpu.upload(&dimg0));
            gpu.patchify_forward(&gimg, &gout, b, c, h, w, p, order);
            gpu.patchify_backward(&gout, &gdimg, b, c, h, w, p, order);
            assert_eq!(crate::block_on(gpu.read(&gout)), out, "{order:?} forward");
            assert_eq!(crate::block_on(gpu.read(&gdimg)), dimg, "{order:?} backward");
        }
    }
}
