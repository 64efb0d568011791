//! The Attention page's one owner of compute, as `crate::engine` is the Reconstruct page's:
//! a ViT on the CPU backend or on the browser's WebGPU adapter. The page hands it a
//! normalised image and gets plain [`AttentionMap`]s back; no buffer leaves this module.
use std::rc::Rc;

use patchwork_compute::attention::{all_layers, VitModel};
use patchwork_compute::{AttentionMap, Cpu, Gpu, TensorFile, Vit};

use crate::engine::BackendKind;

enum Loaded {
    Cpu(Cpu, Vit<Cpu>),
    Gpu(Gpu, Vit<Gpu>),
}

/// A ViT on a backend. Cheap to clone.
#[derive(Clone)]
pub struct VitEngine {
    loaded: Rc<Loaded>,
    pub model: Rc<VitModel>,
    pub kind: BackendKind,
}

impl VitEngine {
    /// Put the ViT `file` holds (as [`super::parse_vit`] returns it) on `kind`; WebGPU asks
    /// the browser for a device first.
    pub async fn load(model: VitModel, file: &TensorFile, kind: BackendKind) -> Result<VitEngine, String> {
        let cfg = model.cfg.clone();
        let loaded = match kind {
            BackendKind::Cpu => Loaded::Cpu(Cpu, Vit::from_file(&Cpu, cfg, file).map_err(|e| e.to_string())?),
            BackendKind::WebGpu => {
                let gpu = Gpu::new().await.map_err(|e| format!("WebGPU: {e}"))?;
                let vit = Vit::from_file(&gpu, cfg, file).map_err(|e| e.to_string())?;
                Loaded::Gpu(gpu, vit)
            }
        };
        Ok(VitEngine { loaded: Rc::new(loaded), model: Rc::new(model), kind })
    }

    /// Every layer's attention for `x: [C, H, W]` (normalised) at `img_size`, first layer to
    /// last: one forward, then one read per layer. At a size other than the model's own the
    /// position embeddings are interpolated (DINO's `interpolate_pos_encoding`).
    pub async fn attention(&self, x: &[f32], img_size: [usize; 2]) -> Result<Vec<AttentionMap>, String> {
        match &*self.loaded {
            Loaded::Cpu(be, vit) => {
                Ok(all_layers(be, &vit.at_size(be, img_size).map_err(|e| e.to_string())?.vit, x).await)
            }
            Loaded::Gpu(be, vit) => {
                Ok(all_layers(be, &vit.at_size(be, img_size).map_err(|e| e.to_string())?.vit, x).await)
            }
        }
    }
}
