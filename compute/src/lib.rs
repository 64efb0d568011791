//! Patchwork's engine: Vision Transformers forward and backward, written once over
//! [`Backend`] and run by the CPU reference ([`Cpu`]) or hand-written WGSL ([`gpu::Gpu`]).
pub mod backend;
pub mod cpu;
pub mod ops;
pub mod rng;

pub use backend::{AdamW, Backend, Matmul, PatchOrder, Strides};
pub use cpu::Cpu;

/// Block on a future natively (the CPU backend's futures are ready at once; the GPU's
/// resolve after `poll`). On the web, `await` instead.
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
