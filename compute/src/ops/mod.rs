//! One file per op: the CPU reference (plain Rust over slices), the GPU launcher for the
//! op's WGSL entry points (`shaders/<op>.wgsl`, pipeline labels `<op>.<entry>`), and the
//! op's tests: finite differences against the reference's backward, and the GPU against
//! the reference on awkward sizes.
pub mod adamw;
pub mod center;
pub mod cls_pos;
pub mod cross_entropy;
pub mod gather;
pub mod gelu;
pub mod l2norm;
pub mod layernorm;
pub mod matmul;
pub mod mse;
pub mod patchify;
pub mod rel_pos_bias;
pub mod soft_cross_entropy;
pub mod softmax;

#[cfg(test)]
pub(crate) mod testing;

/// Run `f(row_index, row)` over the rows of `data` (`cols` wide), in parallel natively.
pub(crate) fn for_rows(data: &mut [f32], cols: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if cols == 0 {
        return;
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        if data.len() >= 1 << 14 {
            data.par_chunks_mut(cols).enumerate().for_each(|(i, r)| f(i, r));
            return;
        }
    }
    data.chunks_mut(cols).enumerate().for_each(|(i, r)| f(i, r));
}

/// Apply `f(i, out_chunk)` over `chunk`-sized pieces of `out`, in parallel natively.
pub(crate) fn for_chunks(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    for_rows(out, chunk.max(1), f)
}
