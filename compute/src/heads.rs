//! Projection heads for self-distillation, with the official parameter names.
//!
//! [`DinoHead`] is facebookresearch/dino's `DINOHead` (iBOT shares it):
//! ```text
//! x = mlp(x)                       # Linear GELU [Linear GELU]*(nlayers-2) Linear; no BN
//! x = F.normalize(x, dim=-1, p=2)  # eps 1e-12
//! x = last_layer(x)                # weight_norm(Linear(bottleneck, out, bias=False))
//! ```
//! The weight-normalised layer's weight is `w[o] = g[o] · v[o] / ‖v[o]‖`, computed on every
//! forward from `last_layer.weight_g` [out_dim, 1] and `last_layer.weight_v`
//! [out_dim, bottleneck_dim]; with `norm_last_layer` the gain is frozen at 1.
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::layers::Linear;
use crate::params::Params;
use crate::rng::Rng;
use crate::transformer::linear;
use crate::weights::{TensorFile, WeightsError};

/// `DINOHead`'s constructor arguments (their names; DINO's `main_dino.py` defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DinoHeadConfig {
    pub in_dim: usize,
    pub out_dim: usize,
    pub hidden_dim: usize,
    pub bottleneck_dim: usize,
    pub nlayers: usize,
    pub norm_last_layer: bool,
}

impl Default for DinoHeadConfig {
    fn default() -> Self {
        DinoHeadConfig {
            in_dim: 384,
            out_dim: 65536,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            nlayers: 3,
            norm_last_layer: true,
        }
    }
}

impl DinoHeadConfig {
    pub fn from_json(s: &str) -> Result<Self, WeightsError> {
        let cfg: DinoHeadConfig = serde_json::from_str(s).map_err(|e| WeightsError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), WeightsError> {
        let dims = [self.in_dim, self.out_dim, self.bottleneck_dim, self.nlayers];
        if dims.contains(&0) || (self.nlayers > 1 && self.hidden_dim == 0) {
            return Err(WeightsError::Config(format!("DINOHead dimensions and nlayers must be positive: {self:?}")));
        }
        Ok(())
    }

    /// The mlp's linear layers: name prefix, in and out features.
    fn mlp(&self) -> Vec<(String, usize, usize)> {
        let n = self.nlayers;
        if n == 1 {
            return vec![("mlp".into(), self.in_dim, self.bottleneck_dim)];
        }
        (0..n)
            .map(|i| {
                let inp = if i == 0 { self.in_dim } else { self.hidden_dim };
                let out = if i == n - 1 { self.bottleneck_dim } else { self.hidden_dim };
                // nn.Sequential numbers the GELUs too: Linear i sits at index 2i.
                (format!("mlp.{}", 2 * i), inp, out)
            })
            .collect()
    }

    /// Every parameter's official name and shape, in `state_dict()` order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = Vec::new();
        for (name, inp, out) in self.mlp() {
            v.push((format!("{name}.weight"), vec![out, inp]));
            v.push((format!("{name}.bias"), vec![out]));
        }
        v.push(("last_layer.weight_g".into(), vec![self.out_dim, 1]));
        v.push(("last_layer.weight_v".into(), vec![self.out_dim, self.bottleneck_dim]));
        v
    }
}

pub struct DinoHead<B: Backend> {
    pub cfg: DinoHeadConfig,
    pub params: Params<B>,
}

/// What [`DinoHead::forward`] keeps for backward.
pub struct DinoHeadForward<B: Backend> {
    rows: usize,
    /// The input of each mlp Linear: `x`, then each GELU's output.
    inputs: Vec<B::Buf>,
    /// Each GELU's input (the hidden Linears' outputs).
    pre_gelu: Vec<B::Buf>,
    /// The mlp's output and its row norms: `[rows, bottleneck]`, `[rows]`.
    bottleneck: B::Buf,
    bottleneck_norm: B::Buf,
    normalized: B::Buf,
    /// `g · v / ‖v‖`: `[out_dim, bottleneck]`, and `‖v‖`: `[out_dim]`.
    weight: B::Buf,
    v_norm: B::Buf,
    /// `[rows, out_dim]`.
    pub output: B::Buf,
}

/// `F.normalize`'s default eps.
const NORMALIZE_EPS: f32 = 1e-12;

impl<B: Backend> DinoHead<B> {
    /// DINO's init: Linear weights trunc_normal(std .02), biases 0; `weight_g` 1;
    /// `weight_v` as `nn.Linear`'s default, U(±1/√bottleneck_dim).
    pub fn new(be: &B, cfg: DinoHeadConfig, rng: &mut Rng) -> Self {
        let mut params = Params::new();
        for (name, shape) in cfg.param_shapes() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name == "last_layer.weight_g" {
                vec![1.0; n]
            } else if name == "last_layer.weight_v" {
                let bound = (cfg.bottleneck_dim as f32).powf(-0.5);
                (0..n).map(|_| (2.0 * rng.uniform() - 1.0) * bound).collect()
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| rng.trunc_normal(0.02)).collect()
            };
            params.push(name, shape, be.upload(&values));
        }
        DinoHead { cfg, params }
    }

    /// Load officially named weights (`input.`/`expect.` tensors of a fixture are ignored).
    pub fn from_file(be: &B, cfg: DinoHeadConfig, file: &TensorFile) -> Result<Self, WeightsError> {
        cfg.validate()?;
        Ok(DinoHead { params: Params::load(be, &cfg.param_shapes(), &[], file)?, cfg })
    }

    /// Whether a parameter gets a gradient (with `norm_last_layer`, `weight_g` does not).
    pub fn trainable(&self, name: &str) -> bool {
        !(self.cfg.norm_last_layer && name == "last_layer.weight_g")
    }

    fn linears(&self, params: &Params<B>) -> Vec<Linear<B>> {
        self.cfg.mlp().iter().map(|(name, inp, out)| linear(params, name, *inp, *out, true)).collect()
    }

    /// `x: [rows, in_dim]` → `output: [rows, out_dim]`.
    pub fn forward(&self, be: &B, x: &B::Buf, rows: usize) -> DinoHeadForward<B> {
        let (k, out) = (self.cfg.bottleneck_dim, self.cfg.out_dim);
        let linears = self.linears(&self.params);
        let (mut inputs, mut pre_gelu) = (vec![x.clone()], Vec::new());
        let bottleneck = be.alloc(rows * k);
        for (i, lin) in linears.iter().enumerate() {
            if i + 1 == linears.len() {
                lin.forward(be, &inputs[i], &bottleneck, rows);
            } else {
                let (h, g) = (be.alloc(rows * lin.out), be.alloc(rows * lin.out));
                lin.forward(be, &inputs[i], &h, rows);
                be.gelu_forward(&h, &g, rows * lin.out);
                pre_gelu.push(h);
                inputs.push(g);
            }
        }
        let (normalized, bottleneck_norm) = (be.alloc(rows * k), be.alloc(rows));
        be.l2norm_forward(&bottleneck, None, &normalized, &bottleneck_norm, rows, k, NORMALIZE_EPS);
        let (weight, v_norm) = (be.alloc(out * k), be.alloc(out));
        let (g, v) = (self.params.get("last_layer.weight_g"), self.params.get("last_layer.weight_v"));
        be.l2norm_forward(v, Some(g), &weight, &v_norm, out, k, 0.0);
        let output = be.alloc(rows * out);
        Linear { w: weight.clone(), b: None, inp: k, out }.forward(be, &normalized, &output, rows);
        DinoHeadForward { rows, inputs, pre_gelu, bottleneck, bottleneck_norm, normalized, weight, v_norm, output }
    }

    /// Add the gradients of `doutput: [rows, out_dim]` into `grads` (named as `params`;
    /// a frozen `weight_g`'s slot is left alone) and into `dx: [rows, in_dim]` when given.
    pub fn backward(&self, be: &B, fwd: &DinoHeadForward<B>, doutput: &B::Buf, grads: &Params<B>, dx: Option<&B::Buf>) {
        let (rows, k, out) = (fwd.rows, self.cfg.bottleneck_dim, self.cfg.out_dim);
        let last = Linear { w: fwd.weight.clone(), b: None, inp: k, out };
        let (dweight, dnormalized) = (be.alloc(out * k), be.alloc(rows * k));
        let dlast = Linear { w: dweight.clone(), b: None, inp: k, out };
        last.backward(be, doutput, &fwd.normalized, &dlast, Some(&dnormalized), rows);
        let (g, v) = (self.params.get("last_layer.weight_g"), self.params.get("last_layer.weight_v"));
        let dg = self.trainable("last_layer.weight_g").then(|| grads.get("last_layer.weight_g"));
        be.l2norm_backward(&dweight, &fwd.v_norm, v, Some(g), grads.get("last_layer.weight_v"), dg, out, k, 0.0);

        let mut dh = be.alloc(rows * k);
        be.l2norm_backward(
            &dnormalized,
            &fwd.bottleneck_norm,
            &fwd.bottleneck,
            None,
            &dh,
            None,
            rows,
            k,
            NORMALIZE_EPS,
        );
        let (linears, dlinears) = (self.linears(&self.params), self.linears(grads));
        for i in (0..linears.len()).rev() {
            let lin = &linears[i];
            if i == 0 {
                lin.backward(be, &dh, &fwd.inputs[0], &dlinears[0], dx, rows);
            } else {
                let dg_out = be.alloc(rows * lin.inp);
                lin.backward(be, &dh, &fwd.inputs[i], &dlinears[i], Some(&dg_out), rows);
                let dpre = be.alloc(rows * lin.inp);
                be.gelu_backward(&dg_out, &fwd.pre_gelu[i - 1], &dpre, rows * lin.inp);
                dh = dpre;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dino_head_names_follow_nn_sequential() {
        let cfg = DinoHeadConfig { in_dim: 4, out_dim: 7, hidden_dim: 5, bottleneck_dim: 3, ..Default::default() };
        let names: Vec<String> = cfg.param_shapes().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "mlp.0.weight",
                "mlp.0.bias",
                "mlp.2.weight",
                "mlp.2.bias",
                "mlp.4.weight",
                "mlp.4.bias",
                "last_layer.weight_g",
                "last_layer.weight_v"
            ]
        );
        let single = DinoHeadConfig { nlayers: 1, ..cfg };
        assert_eq!(single.param_shapes()[0], ("mlp.weight".to_string(), vec![3, 4]));
    }

    #[test]
    fn a_new_dino_head_outputs_cosines() {
        use crate::Cpu;
        let cfg = DinoHeadConfig { in_dim: 6, out_dim: 9, hidden_dim: 8, bottleneck_dim: 4, ..Default::default() };
        let head = DinoHead::new(&Cpu, cfg, &mut Rng::new(1));
        let x = crate::ops::testing::randn(2 * 6, 2);
        let fwd = head.forward(&Cpu, &Cpu.upload(&x), 2);
        let y = crate::block_on(Cpu.read(&fwd.output));
        // Unit rows times unit weight rows (g = 1): every output is a cosine.
        assert!(y.iter().all(|v| v.abs() <= 1.0 + 1e-6), "{y:?}");
    }
}
