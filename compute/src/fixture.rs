//! Parity fixtures, format `patchwork-fixture/1`: one safetensors file written by the
//! PyTorch generator in `tests/reference/`. `__metadata__` holds `format`, `case` and
//! `config` (JSON with the reference constructor's argument names); tensors are the
//! parameters under their reference names, inputs under `input.`, expected outputs under
//! `expect.`. [`run`] recomputes every expected key present on a backend and reports its
//! error; a key it does not know is a failure, never skipped.
use std::fmt;

use crate::backend::Backend;
use crate::heads::{DinoHead, DinoHeadConfig};
use crate::methods::dino::{DinoLoss, DinoLossConfig, IbotLoss, IbotLossConfig, IbotOutputs};
use crate::methods::mae::{Mae, MaeConfig, Masking};
use crate::swin::{Swin, SwinConfig};
use crate::vit::{Vit, VitConfig};
use crate::weights::{TensorFile, WeightsError};

pub const FORMAT: &str = "patchwork-fixture/1";

/// One compared key.
#[derive(Clone, Debug)]
pub struct Check {
    pub key: String,
    pub max_abs: f32,
    /// `max |got − want| / max |want|`.
    pub max_rel: f32,
    pub passed: bool,
    /// Set when the key could not be compared (unknown key, wrong shape).
    pub problem: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "ok  " } else { "FAIL" };
        match &self.problem {
            Some(p) => write!(f, "{verdict} {:<44} {p}", self.key),
            None => write!(f, "{verdict} {:<44} max abs {:.3e}  rel {:.3e}", self.key, self.max_abs, self.max_rel),
        }
    }
}

/// Pass when `max_abs ≤ atol` or `max_rel ≤ rtol`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { atol: 1e-4, rtol: 1e-3 }
    }
}

#[derive(Debug)]
pub enum FixtureError {
    Malformed(String),
    Weights(WeightsError),
}

impl fmt::Display for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FixtureError::Malformed(m) => write!(f, "malformed fixture: {m}"),
            FixtureError::Weights(e) => write!(f, "fixture weights do not fit its config: {e}"),
        }
    }
}

impl std::error::Error for FixtureError {}

impl From<WeightsError> for FixtureError {
    fn from(e: WeightsError) -> Self {
        FixtureError::Weights(e)
    }
}

fn malformed<T>(m: impl Into<String>) -> Result<T, FixtureError> {
    Err(FixtureError::Malformed(m.into()))
}

/// Compare `got` against the expected tensor `key` of `file`.
pub fn compare(file: &TensorFile, key: &str, got: &[f32], tol: Tolerance) -> Check {
    let want = file.tensors[key].to_f32();
    if want.len() != got.len() {
        let problem = format!("expected {} values {:?}, computed {}", want.len(), file.tensors[key].shape, got.len());
        return Check { key: key.into(), max_abs: f32::NAN, max_rel: f32::NAN, passed: false, problem: Some(problem) };
    }
    let mut max_abs = 0f32;
    let mut scale = 0f32;
    let mut finite = true;
    for (g, w) in got.iter().zip(&want) {
        finite &= g.is_finite();
        max_abs = max_abs.max((g - w).abs());
        scale = scale.max(w.abs());
    }
    let max_rel = if scale > 0.0 { max_abs / scale } else { max_abs };
    let passed = finite && (max_abs <= tol.atol || max_rel <= tol.rtol);
    Check { key: key.into(), max_abs, max_rel, passed, problem: (!finite).then(|| "non-finite values".into()) }
}

fn unknown(key: &str) -> Check {
    Check {
        key: key.into(),
        max_abs: f32::NAN,
        max_rel: f32::NAN,
        passed: false,
        problem: Some("unknown expected key for this case".into()),
    }
}

/// The fixture's case and config, checked.
pub fn header(file: &TensorFile) -> Result<(String, String), FixtureError> {
    match file.metadata.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => return malformed(format!("format is {f:?}, this build reads {FORMAT:?}")),
        None => return malformed(format!("no `format` in __metadata__ (expected {FORMAT:?})")),
    }
    let case = file.metadata.get("case").cloned().ok_or(FixtureError::Malformed("no `case` in __metadata__".into()))?;
    let config =
        file.metadata.get("config").cloned().ok_or(FixtureError::Malformed("no `config` in __metadata__".into()))?;
    Ok((case, config))
}

/// Run the case a fixture describes on `be` and compare every `expect.` key.
pub async fn run<B: Backend>(be: &B, file: &TensorFile, tol: Tolerance) -> Result<Vec<Check>, FixtureError> {
    let (case, config) = header(file)?;
    match case.as_str() {
        "vit" => run_vit(be, file, &config, tol).await,
        "mae" => run_mae(be, file, &config, tol).await,
        "swin" => run_swin(be, file, &config, tol).await,
        "dino_head" => run_dino_head(be, file, &config, tol).await,
        "dino_loss" => run_dino_loss(be, file, &config, tol).await,
        "ibot_loss" => run_ibot_loss(be, file, &config, tol).await,
        other => malformed(format!(
            "case {other:?} is not known to this build (known: vit, mae, swin, dino_head, dino_loss, ibot_loss)"
        )),
    }
}

async fn run_vit<B: Backend>(
    be: &B,
    file: &TensorFile,
    config: &str,
    tol: Tolerance,
) -> Result<Vec<Check>, FixtureError> {
    let cfg = VitConfig::from_json(config)?;
    let model = Vit::from_file(be, cfg.clone(), file)?;
    let [h, w] = cfg.img_size;
    let (x, batch) = image_input(file, cfg.in_chans, h, w)?;
    let fwd = model.forward(be, &be.upload(&x.to_f32()), batch);
    let grads = model.params.zeros_like(be);
    let dimg = be.alloc(batch * cfg.in_chans * h * w);
    let loss = supervised_loss(be, file, fwd.logits.as_ref(), batch, cfg.num_classes, |dlogits| {
        model.backward(be, &fwd, Some(dlogits), None, &grads, Some(&dimg))
    })
    .await?;
    Ok(check_expects(file, tol, async |key: &str| match key {
        "logits" => Some(match &fwd.logits {
            Some(l) => be.read(l).await,
            None => model.pre_logits(be, &fwd).await,
        }),
        "pre_logits" => Some(model.pre_logits(be, &fwd).await),
        "features" => Some(be.read(&fwd.features).await),
        "loss" => loss.map(|l| vec![l as f32]),
        "grad.input.x" => Some(be.read(&dimg).await),
        k => {
            let buf = match (k.strip_prefix("grad."), k.strip_prefix("attn_probs.")) {
                (Some(name), _) => grads.try_get(name),
                (_, Some(i)) => i.parse::<usize>().ok().and_then(|i| fwd.blocks.get(i)).map(|b| &b.probs),
                _ => None,
            };
            match buf {
                Some(b) => Some(be.read(b).await),
                None => None,
            }
        }
    })
    .await)
}

/// `input.x`, checked to be `[B, chans, h, w]`; returns it and `B`.
fn image_input(
    file: &TensorFile,
    chans: usize,
    h: usize,
    w: usize,
) -> Result<(&crate::weights::Tensor, usize), FixtureError> {
    let x = input(file, "input.x")?;
    if x.shape.len() != 4 || x.shape[1..] != [chans, h, w] {
        return malformed(format!("input.x has shape {:?}, config wants [B, {chans}, {h}, {w}]", x.shape));
    }
    Ok((x, x.shape[0]))
}

/// For a supervised case: when the fixture expects a loss or gradients, the mean
/// cross-entropy of `logits` against `input.labels`; when it expects gradients, `backward`
/// is called with the gradient of that mean w.r.t. the logits.
async fn supervised_loss<B: Backend>(
    be: &B,
    file: &TensorFile,
    logits: Option<&B::Buf>,
    batch: usize,
    classes: usize,
    backward: impl FnOnce(&B::Buf),
) -> Result<Option<f64>, FixtureError> {
    let wants_grad = file.tensors.keys().any(|k| k.starts_with("expect.grad."));
    if !wants_grad && !file.tensors.contains_key("expect.loss") {
        return Ok(None);
    }
    let (Some(labels), Some(logits)) = (file.tensors.get("input.labels"), logits) else {
        return malformed("expected loss or gradients need `input.labels` and a model with a head");
    };
    let labels = labels.as_i64().ok_or(FixtureError::Malformed("input.labels must be an integer tensor".into()))?;
    if labels.len() != batch || labels.iter().any(|v| *v < 0 || *v as usize >= classes) {
        return malformed(format!("input.labels must hold {batch} labels in 0..{classes}"));
    }
    let lb = be.upload_u32(&labels.iter().map(|v| *v as u32).collect::<Vec<u32>>());
    let (losses, probs) = (be.alloc(batch), be.alloc(batch * classes));
    be.cross_entropy_forward(logits, &lb, &losses, &probs, batch, classes);
    if wants_grad {
        let dlogits = be.alloc(batch * classes);
        be.cross_entropy_backward(&be.upload(&vec![1.0 / batch as f32; batch]), &probs, &lb, &dlogits, batch, classes);
        backward(&dlogits);
    }
    let l = be.read(&losses).await;
    Ok(Some(l.iter().map(|v| *v as f64).sum::<f64>() / batch as f64))
}

/// Compare every `expect.<key>` of the fixture with `got(key)`; `None` means the key is
/// not known for the case, which fails.
async fn check_expects(file: &TensorFile, tol: Tolerance, got: impl AsyncFn(&str) -> Option<Vec<f32>>) -> Vec<Check> {
    let mut checks = Vec::new();
    for key in file.tensors.keys().filter(|k| k.starts_with("expect.")) {
        checks.push(match got(key.strip_prefix("expect.").unwrap()).await {
            Some(g) => compare(file, key, &g, tol),
            None => unknown(key),
        });
    }
    checks
}

fn input<'a>(file: &'a TensorFile, name: &str) -> Result<&'a crate::weights::Tensor, FixtureError> {
    file.tensors.get(name).ok_or_else(|| FixtureError::Malformed(format!("no `{name}`")))
}

async fn run_mae<B: Backend>(
    be: &B,
    file: &TensorFile,
    config: &str,
    tol: Tolerance,
) -> Result<Vec<Check>, FixtureError> {
    let cfg = MaeConfig::from_json(config)?;
    let model = Mae::from_file(be, cfg.clone(), file)?;
    let (s, l) = (cfg.img_size, cfg.patches());
    let (x, batch) = image_input(file, cfg.in_chans, s, s)?;
    let noise = input(file, "input.noise")?;
    if noise.shape != [batch, l] {
        return malformed(format!("input.noise has shape {:?}, config wants [{batch}, {l}]", noise.shape));
    }
    let masking = Masking::from_noise(&noise.to_f32(), batch, l, cfg.keep());
    let fwd = model.forward(be, &be.upload(&x.to_f32()), masking.clone());
    let grads = model.params.zeros_like(be);
    model.backward(be, &fwd, &grads);
    let loss = Mae::<B>::loss(&masking, &be.read(&fwd.losses).await);

    let mut checks = Vec::new();
    // The fixed sin-cos tables are recomputed here; check them against the reference's.
    for (name, buf) in model.fixed.list.iter().map(|p| (&p.name, &p.buf)) {
        if file.tensors.contains_key(name) {
            checks.push(compare(file, name, &be.read(buf).await, tol));
        }
    }
    checks.extend(
        check_expects(file, tol, async |key: &str| match key {
            "loss" => Some(vec![loss as f32]),
            "pred" => Some(be.read(&fwd.pred).await),
            "mask" => Some(masking.mask.clone()),
            "ids_restore" => Some(masking.ids_restore.iter().map(|v| *v as f32).collect()),
            "latent" => Some(be.read(&fwd.latent).await),
            k => match k.strip_prefix("grad.").and_then(|n| grads.try_get(n)) {
                Some(g) => Some(be.read(g).await),
                None => None,
            },
        })
        .await,
    );
    Ok(checks)
}

/// Case `swin`: timm's `SwinTransformer`, as `run_vit` (logits, loss, features, gradients).
async fn run_swin<B: Backend>(
    be: &B,
    file: &TensorFile,
    config: &str,
    tol: Tolerance,
) -> Result<Vec<Check>, FixtureError> {
    let cfg = SwinConfig::from_json(config)?;
    let model = Swin::from_file(be, cfg.clone(), file)?;
    let [h, w] = cfg.img_size;
    let (x, batch) = image_input(file, cfg.in_chans, h, w)?;
    let fwd = model.forward(be, &be.upload(&x.to_f32()), batch);
    let grads = model.params.zeros_like(be);
    let dimg = be.alloc(batch * cfg.in_chans * h * w);
    let loss = supervised_loss(be, file, fwd.logits.as_ref(), batch, cfg.num_classes, |dlogits| {
        model.backward(be, &fwd, Some(dlogits), None, None, &grads, Some(&dimg))
    })
    .await?;
    Ok(check_expects(file, tol, async |key: &str| match key {
        "logits" => Some(be.read(fwd.logits.as_ref().unwrap_or(&fwd.pooled)).await),
        "pre_logits" => Some(be.read(&fwd.pooled).await),
        "features" => Some(be.read(&fwd.features).await),
        "loss" => loss.map(|l| vec![l as f32]),
        "grad.input.x" => Some(be.read(&dimg).await),
        k => match k.strip_prefix("grad.").and_then(|n| grads.try_get(n)) {
            Some(g) => Some(be.read(g).await),
            None => None,
        },
    })
    .await)
}

/// The values of input `name`, checked to have `shape`.
fn shaped(file: &TensorFile, name: &str, shape: &[usize]) -> Result<Vec<f32>, FixtureError> {
    let t = input(file, name)?;
    if t.shape != shape {
        return malformed(format!("{name} has shape {:?}, the config wants {shape:?}", t.shape));
    }
    Ok(t.to_f32())
}

/// Case `dino_head`: DINO's `DINOHead`; output, every trainable parameter's gradient and
/// the input's, given the upstream gradient `input.grad_output`.
async fn run_dino_head<B: Backend>(
    be: &B,
    file: &TensorFile,
    config: &str,
    tol: Tolerance,
) -> Result<Vec<Check>, FixtureError> {
    let cfg = DinoHeadConfig::from_json(config)?;
    let head = DinoHead::from_file(be, cfg.clone(), file)?;
    let x = input(file, "input.x")?;
    if x.shape.len() != 2 || x.shape[1] != cfg.in_dim {
        return malformed(format!("input.x has shape {:?}, config wants [B, {}]", x.shape, cfg.in_dim));
    }
    let rows = x.shape[0];
    let doutput = shaped(file, "input.grad_output", &[rows, cfg.out_dim])?;
    let fwd = head.forward(be, &be.upload(&x.to_f32()), rows);
    let grads = head.params.zeros_like(be);
    let dx = be.alloc(rows * cfg.in_dim);
    head.backward(be, &fwd, &be.upload(&doutput), &grads, Some(&dx));
    Ok(check_expects(file, tol, async |key: &str| match key {
        "output" => Some(be.read(&fwd.output).await),
        "grad.input.x" => Some(be.read(&dx).await),
        k => match k.strip_prefix("grad.").filter(|n| head.trainable(n)).and_then(|n| grads.try_get(n)) {
            Some(g) => Some(be.read(g).await),
            None => None,
        },
    })
    .await)
}

/// Case `dino_loss`: `DINOLoss` at a fixed teacher temperature; the loss, the student's
/// gradient and the centre after its update.
async fn run_dino_loss<B: Backend>(
    be: &B,
    file: &TensorFile,
    config: &str,
    tol: Tolerance,
) -> Result<Vec<Check>, FixtureError> {
    let cfg = DinoLossConfig::from_json(config)?;
    let (d, ncrops) = (cfg.out_dim, cfg.ncrops);
    let teacher = input(file, "input.teacher_output")?;
    if teacher.shape.len() != 2 || teacher.shape[0] % 2 != 0 || teacher.shape[1] != d {
        return malformed(format!("input.teacher_output has shape {:?}, config wants [2·B, {d}]", teacher.shape));
    }
    let batch = teacher.shape[0] / 2;
    let student = shaped(file, "input.student_output", &[ncrops * batch, d])?;
    let center = be.upload(&shaped(file, "input.center", &[1, d])?);
    let (student, teacher) = (be.upload(&student), be.upload(&teacher.to_f32()));
    let loss = DinoLoss { cfg: cfg.clone() };
    let fwd = loss.forward(be, &student, &teacher, &center, batch, cfg.teacher_temp);
    let dstudent = be.alloc(ncrops * batch * d);
    loss.backward(be, &fwd, &dstudent);
    loss.update_center(be, &teacher, &center, batch);
    let value = fwd.value(&be.read(&fwd.losses).await);
    Ok(check_expects(file, tol, async |key: &str| match key {
        "loss" => Some(vec![value as f32]),
        "grad.input.student_output" => Some(be.read(&dstudent).await),
        "center" => Some(be.read(&center).await),
        _ => None,
    })
    .await)
}

/// Case `ibot_loss`: `iBOTLoss` with two global crops; total, [CLS] and patch losses, the
/// students' gradients and both centres after their update.
async fn run_ibot_loss<B: Backend>(
    be: &B,
    file: &TensorFile,
    config: &str,
    tol: Tolerance,
) -> Result<Vec<Check>, FixtureError> {
    let cfg = IbotLossConfig::from_json(config)?;
    let (d, d2, ncrops) = (cfg.out_dim, cfg.patch_out_dim, cfg.ngcrops + cfg.nlcrops);
    let tp = input(file, "input.teacher_patch")?;
    if tp.shape.len() != 3 || tp.shape[0] % 2 != 0 || tp.shape[2] != d2 {
        return malformed(format!("input.teacher_patch has shape {:?}, config wants [2·B, N, {d2}]", tp.shape));
    }
    let (batch, patches) = (tp.shape[0] / 2, tp.shape[1]);
    let upload = |name: &str, shape: &[usize]| shaped(file, name, shape).map(|v| be.upload(&v));
    let student_cls = upload("input.student_cls", &[ncrops * batch, d])?;
    let teacher_cls = upload("input.teacher_cls", &[2 * batch, d])?;
    let student_patch = upload("input.student_patch", &[2 * batch, patches, d2])?;
    let teacher_patch = be.upload(&tp.to_f32());
    let mask = shaped(file, "input.student_mask", &[2 * batch, patches])?;
    if mask.iter().any(|m| *m != 0.0 && *m != 1.0) {
        return malformed("input.student_mask must hold 0 or 1");
    }
    let center = upload("input.center", &[1, d])?;
    let center_patch = upload("input.center_patch", &[1, 1, d2])?;

    let loss = IbotLoss { cfg };
    let student = IbotOutputs { cls: &student_cls, patch: &student_patch };
    let teacher = IbotOutputs { cls: &teacher_cls, patch: &teacher_patch };
    let fwd = loss.forward(be, student, teacher, &mask, &center, &center_patch, batch, patches);
    let (dcls, dpatch) = (be.alloc(ncrops * batch * d), be.alloc(2 * batch * patches * d2));
    loss.backward(be, &fwd, &dcls, &dpatch);
    let teacher = IbotOutputs { cls: &teacher_cls, patch: &teacher_patch };
    loss.update_center(be, teacher, &center, &center_patch, batch, patches);
    let [total, cls, patch] = loss.loss(be, &fwd).await;
    Ok(check_expects(file, tol, async |key: &str| match key {
        "loss" => Some(vec![total as f32]),
        "loss_cls" => Some(vec![cls as f32]),
        "loss_patch" => Some(vec![patch as f32]),
        "grad.input.student_cls" => Some(be.read(&dcls).await),
        "grad.input.student_patch" => Some(be.read(&dpatch).await),
        "center" => Some(be.read(&center).await),
        "center_patch" => Some(be.read(&center_patch).await),
        _ => None,
    })
    .await)
}
