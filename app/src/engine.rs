//! The page's one owner of compute: the CPU backend, or the `Gpu` on the browser's WebGPU
//! adapter, and the MAE loaded onto it. Components hand it plain data (a normalised image,
//! ratios, a seed) and get plain data back ([`Row`]); no buffer ever leaves this module.
use std::rc::Rc;

use patchwork_compute::methods::mae::{Mae, MaeConfig, Masking};
use patchwork_compute::rng::Rng;
use patchwork_compute::{Backend, Cpu, Gpu};

use crate::reconstruct::{keep_count, masked_errors, to_pixels, ModelFile, Recon};

/// The compute backend the user picked, or the page picked for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    WebGpu,
}

impl BackendKind {
    pub fn label(self) -> &'static str {
        match self {
            BackendKind::Cpu => "CPU backend",
            BackendKind::WebGpu => "WebGPU",
        }
    }
}

/// One grid row as the page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The model's shape, to lay the pictures out.
    pub cfg: MaeConfig,
    pub ratio: f64,
    pub masked_patches: usize,
    pub recon: Recon,
    /// MSE over the removed patches, pixel space [0, 1].
    pub mse: f64,
    /// The same for filling every removed patch with the visible pixels' mean colour.
    pub mse_mean_fill: f64,
}

enum Loaded {
    Cpu(Cpu, Mae<Cpu>),
    Gpu(Gpu, Mae<Gpu>),
}

/// A model on a backend. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    loaded: Rc<Loaded>,
    pub model: Rc<ModelFile>,
    pub kind: BackendKind,
}

impl Engine {
    /// Put `model` on `kind`; WebGPU asks the browser for a device first.
    pub async fn load(model: Rc<ModelFile>, kind: BackendKind) -> Result<Engine, String> {
        let loaded = match kind {
            BackendKind::Cpu => {
                let mae = Mae::from_file(&Cpu, model.cfg.clone(), &model.file).map_err(|e| e.to_string())?;
                Loaded::Cpu(Cpu, mae)
            }
            BackendKind::WebGpu => {
                let gpu = Gpu::new().await.map_err(|e| format!("WebGPU: {e}"))?;
                let mae = Mae::from_file(&gpu, model.cfg.clone(), &model.file).map_err(|e| e.to_string())?;
                Loaded::Gpu(gpu, mae)
            }
        };
        Ok(Engine { loaded: Rc::new(loaded), model, kind })
    }

    /// Reconstruct `x: [C, S, S]` (normalised) at each ratio in order, masks drawn from one
    /// generator seeded with `seed` (as `patchwork reconstruct --seed` draws them). `row`
    /// hears each row as it is done; between rows the event loop runs, and when `stale`
    /// says so the work stops early.
    pub async fn reconstruct(
        &self,
        x: &[f32],
        ratios: &[f64],
        seed: u64,
        mut row: impl FnMut(Row),
        stale: impl Fn() -> bool,
    ) -> Result<(), String> {
        let mut rng = Rng::new(seed);
        for &ratio in ratios {
            if stale() {
                return Ok(());
            }
            let r = match &*self.loaded {
                Loaded::Cpu(be, mae) => one(be, mae, &self.model, x, ratio, &mut rng).await?,
                Loaded::Gpu(be, mae) => one(be, mae, &self.model, x, ratio, &mut rng).await?,
            };
            row(r);
            next_tick().await;
        }
        Ok(())
    }
}

/// One reconstruction of `x` at `ratio` (masks from `rng`), as a grid row.
pub async fn one<B: Backend>(
    be: &B,
    mae: &Mae<B>,
    m: &ModelFile,
    x: &[f32],
    ratio: f64,
    rng: &mut Rng,
) -> Result<Row, String> {
    let l = m.cfg.patches();
    let keep = keep_count(l, ratio).ok_or_else(|| format!("mask ratio {ratio} must leave a visible patch of {l}"))?;
    let masking = Masking::random(rng, 1, l, keep);
    let mask = masking.mask.clone();
    let fwd = mae.forward(be, &be.upload(x), masking);
    be.flush();
    // pred: [1, L, p·p·c]
    let pred = be.read(&fwd.pred).await;
    let recon = to_pixels(&m.cfg, &m.norm, x, &pred, mask);
    let (mse, mse_mean_fill) = masked_errors(&m.cfg, &recon);
    Ok(Row { cfg: m.cfg.clone(), ratio, masked_patches: l - keep, recon, mse, mse_mean_fill })
}

/// Let the browser run its event loop (paint, input) before going on: a 0 ms timeout.
pub async fn next_tick() {
    #[cfg(target_arch = "wasm32")]
    {
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            if let Some(w) = web_sys::window() {
                let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
}
