//! Patchwork's engine: Vision Transformers forward and backward, written once over
//! [`Backend`] and run by the CPU reference ([`Cpu`]) or hand-written WGSL ([`gpu::Gpu`]).

// Reference code indexes like the math it transcribes (llm.c style), and ops take their
// sizes as plain arguments.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]
pub mod attention;
pub mod augment;
pub mod backbone;
pub mod backend;
pub mod cpu;
pub mod eval;
pub mod fixture;
pub mod gpu;
pub mod heads;
pub mod idx;
pub mod layers;
pub mod masking;
pub mod methods;
pub mod model_file;
pub mod ops;
pub mod optim;
pub mod params;
pub mod pos_embed;
pub mod rng;
pub mod swin;
pub mod teacher;
pub mod train;
pub mod transformer;
pub mod vit;
pub mod weights;

pub use backbone::{AttentionMap, Backbone};
pub use backend::{AdamW, Backend, Matmul, PatchOrder, Strides, NO_ROW};
pub use cpu::Cpu;
pub use gpu::{Gpu, GpuBuf, GpuError, GpuStats};
pub use params::Params;
pub use swin::{Swin, SwinConfig, SwinForward};
pub use vit::{Vit, VitConfig, VitForward};
pub use weights::{Tensor, TensorFile, WeightsError};

/// Block on a future natively (the CPU backend's futures are ready at once; the GPU's
/// resolve after `poll`). On the web, `await` instead.
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
