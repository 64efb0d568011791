//! `patchwork bench [--json]`: matmul GFLOP/s at ViT shapes, a ViT training step
//! (forward, backward, AdamW), an MAE training step and a Swin training step on the CPU
//! backend and the native GPU adapter, with the
//! step's efficiency = its matmul FLOPs ÷ (step time × the best matmul rate of the run).
//! A benchmark, not a test: quote medians, compare ratios from the same run.
use std::time::Instant;

use anyhow::Result;
use patchwork_compute::methods::mae::{Mae, MaeConfig, Masking};
use patchwork_compute::methods::supervised::{Classifier, Supervised};
use patchwork_compute::optim::{AdamWState, StepConfig};
use patchwork_compute::rng::Rng;
use patchwork_compute::swin::WindowSize;
use patchwork_compute::{block_on, Cpu, Matmul, Strides, Swin, SwinConfig, Vit, VitConfig};
use serde_json::{json, Value};

use crate::backend::{gpu, Probe};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    /// Timed training steps per backend (after one warm-up step); the median is reported.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Batch size of the training step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// A tiny configuration (depth 2, batch 8) to check the command itself quickly.
    #[arg(long)]
    quick: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Both,
    Cpu,
    Gpu,
}

/// The ViT of the benchmark: img 32, patch 4, width 192, depth 12, 3 heads.
fn step_config(quick: bool) -> VitConfig {
    VitConfig {
        img_size: [32, 32],
        patch_size: 4,
        in_chans: 3,
        embed_dim: 192,
        depth: if quick { 2 } else { 12 },
        num_heads: 3,
        num_classes: 10,
        ..VitConfig::default()
    }
}

/// Matmuls a ViT-192 step runs at batch 64 (rows = 64 × 65 tokens), and a square one.
fn matmul_shapes(rows: usize) -> Vec<(&'static str, Matmul)> {
    let linear = |inp: usize, out: usize| Matmul { b: Strides::transposed(inp), ..Matmul::plain(rows, out, inp) };
    let (n, d, heads) = (65, 64, 3);
    let batch = rows / n;
    vec![
        ("qkv x·Wᵀ [rows,192]·[576,192]ᵀ", linear(192, 576)),
        ("fc1 x·Wᵀ [rows,192]·[768,192]ᵀ", linear(192, 768)),
        ("fc2 x·Wᵀ [rows,768]·[192,768]ᵀ", linear(768, 192)),
        ("fc1 dx = dy·W [rows,768]·[768,192]", Matmul::plain(rows, 192, 768)),
        (
            "fc1 dW = dyᵀ·x [768,rows]·[rows,192]",
            Matmul { a: Strides::transposed(768), beta: 1.0, ..Matmul::plain(768, 192, rows) },
        ),
        (
            "attn q·kᵀ [65,64]·[64,65] ×192",
            Matmul {
                m: n,
                n,
                k: d,
                batch: [batch, heads],
                a: Strides { offset: 0, row: 576, col: 1, batch_stride: [n * 576, d] },
                b: Strides { offset: 192, row: 1, col: 576, batch_stride: [n * 576, d] },
                c: Strides { offset: 0, row: n, col: 1, batch_stride: [heads * n * n, n * n] },
                alpha: 0.125,
                beta: 0.0,
            },
        ),
        ("square [1024,1024]·[1024,1024]", Matmul::plain(1024, 1024, 1024)),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// GFLOP/s of one matmul: repeats recorded back to back, finished by one read.
fn time_matmul<B: Probe>(be: &B, p: &Matmul) -> f64 {
    let [ea, eb, ec] = p.extents();
    let mut rng = Rng::new(1);
    let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal()).collect() };
    let (a, b, c) = (be.upload(&rand(ea)), be.upload(&rand(eb)), be.alloc(ec));
    let sync = |be: &B| block_on(be.read(&c));
    be.matmul(p, &a, &b, None, &c);
    sync(be);
    // Size the repeats to about 0.2 s from one timed run.
    let t = Instant::now();
    be.matmul(p, &a, &b, None, &c);
    sync(be);
    let reps = ((0.2 / t.elapsed().as_secs_f64().max(1e-6)) as usize).clamp(1, 200);
    let trials: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                be.matmul(p, &a, &b, None, &c);
            }
            sync(be);
            p.flops() * reps as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    median(trials)
}

/// Time `step` (which records one training step and reads its loss back, so on the GPU
/// it is one submit): one warm-up, then `args.steps` timed runs. Reports the median, the
/// device counters of the last step, and the efficiency against `best` GFLOP/s.
#[allow(clippy::too_many_arguments)]
fn time_steps<B: Probe>(
    be: &B,
    args: &Args,
    what: &str,
    batch: usize,
    flops: f64,
    best: f64,
    log: &dyn Fn(&str),
    mut step: impl FnMut() -> f64,
) -> Value {
    let mut timed = || {
        let t = Instant::now();
        let before = be.counters();
        let loss = step();
        let after = be.counters();
        assert!(loss.is_finite(), "non-finite loss in the {what} benchmark step");
        (t.elapsed().as_secs_f64(), before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1, a.2)))
    };
    timed(); // warm-up: pipelines compile, the pool fills
    let (mut times, mut counters) = (Vec::new(), None);
    for i in 0..args.steps.max(1) {
        let (dt, c) = timed();
        log(&format!("  {what} step {}/{}: {:.1} ms", i + 1, args.steps.max(1), dt * 1e3));
        times.push(dt);
        counters = c;
    }
    let ms = median(times.clone()) * 1e3;
    let efficiency = flops / (ms / 1e3 * best * 1e9);
    log(&format!(
        "  {what}, batch {batch}: {ms:.1} ms median, {:.1} img/s, {:.1} GFLOP matmul, efficiency {efficiency:.2}",
        batch as f64 / (ms / 1e3),
        flops / 1e9
    ));
    let mut out = json!({
        "ms_per_step_median": ms,
        "ms_per_step_all": times.iter().map(|t| t * 1e3).collect::<Vec<_>>(),
        "images_per_s": batch as f64 / (ms / 1e3),
        "matmul_gflop_per_step": flops / 1e9,
        "best_matmul_gflops": best,
        "efficiency": efficiency,
    });
    if let Some((dispatches, submits, bytes)) = counters {
        log(&format!(
            "  per {what} step: {dispatches} dispatches, {submits} submit(s); GPU memory held {:.1} MiB",
            bytes as f64 / 1048576.0
        ));
        out["dispatches_per_step"] = json!(dispatches);
        out["submits_per_step"] = json!(submits);
        out["gpu_bytes_held"] = json!(bytes);
    }
    out
}

fn mean_loss(losses: &[f32]) -> f64 {
    losses.iter().map(|l| *l as f64).sum::<f64>() / losses.len() as f64
}

fn bench_backend<B: Probe>(be: &B, args: &Args, log: &dyn Fn(&str)) -> Value {
    let rows = 64 * 65;
    let mut matmuls = Vec::new();
    let mut best = 0f64;
    for (name, p) in matmul_shapes(rows) {
        let g = time_matmul(be, &p);
        best = best.max(g);
        log(&format!("  matmul {name:<40} {g:>8.1} GFLOP/s"));
        matmuls.push(json!({ "name": name, "m": p.m, "n": p.n, "k": p.k, "batch": p.batch_count(), "gflops": g }));
    }
    let vit = bench_vit(be, args, best, log);
    let mae = bench_mae(be, args, best, log);
    let swin = bench_swin(be, args, best, log);
    json!({ "backend": be.name(), "matmul": matmuls, "train_step": vit, "mae_step": mae, "swin_step": swin })
}

fn batch_of(args: &Args) -> usize {
    if args.quick {
        8
    } else {
        args.batch
    }
}

fn random_images<B: Probe>(be: &B, batch: usize, seed: u64) -> B::Buf {
    let mut rng = Rng::new(seed);
    be.upload(&(0..batch * 3 * 32 * 32).map(|_| rng.normal()).collect::<Vec<f32>>())
}

/// The ViT step: img 32, patch 4, width 192, depth 12, 3 heads; cross-entropy, clipping
/// at 1.0 and AdamW.
fn bench_vit<B: Probe>(be: &B, args: &Args, best: f64, log: &dyn Fn(&str)) -> Value {
    let (cfg, batch) = (step_config(args.quick), batch_of(args));
    let mut run = Supervised::new(be, Classifier::Vit(Vit::init(be, cfg.clone(), 0)));
    let xb = random_images(be, batch, 7);
    let lb = be.upload_u32(&(0..batch).map(|i| (i % 10) as u32).collect::<Vec<_>>());
    let step_cfg = StepConfig { lr: 1e-4, clip: Some(1.0), ..StepConfig::default() };
    let what = format!("ViT {}x{} img32 p4", cfg.embed_dim, cfg.depth);
    let mut out = time_steps(be, args, &what, batch, cfg.train_step_matmul_flops(batch), best, log, || {
        mean_loss(&block_on(be.read(&run.step(be, &xb, &lb, batch, &step_cfg))))
    });
    out["model"] = json!({ "img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": cfg.depth, "num_heads": 3, "batch": batch });
    out
}

/// The MAE step: the same encoder, decoder 128 wide × 2 (4 heads), mask ratio 0.75.
fn bench_mae<B: Probe>(be: &B, args: &Args, best: f64, log: &dyn Fn(&str)) -> Value {
    let cfg = MaeConfig {
        img_size: 32,
        patch_size: 4,
        in_chans: 3,
        embed_dim: 192,
        depth: if args.quick { 2 } else { 12 },
        num_heads: 3,
        decoder_embed_dim: 128,
        decoder_depth: 2,
        decoder_num_heads: 4,
        mlp_ratio: 4.0,
        norm_pix_loss: false,
        mask_ratio: 0.75,
        norm_eps: 1e-6,
    };
    let batch = batch_of(args);
    let model = Mae::init(be, cfg.clone(), 0);
    let grads = model.params.zeros_like(be);
    let mut opt = AdamWState::new(be, &model.params);
    let mut rng = Rng::new(9);
    let xb = random_images(be, batch, 9);
    let step_cfg = StepConfig { lr: 1e-4, beta2: 0.95, ..StepConfig::default() };
    let what = format!("MAE {}x{} img32 p4 dec 128x2 r0.75", cfg.embed_dim, cfg.depth);
    time_steps(be, args, &what, batch, cfg.train_step_matmul_flops(batch), best, log, || {
        let masking = Masking::random(&mut rng, batch, cfg.patches(), cfg.keep());
        grads.fill(be, 0.0);
        let fwd = model.forward(be, &xb, masking);
        model.backward(be, &fwd, &grads);
        opt.update(be, &model.params, &grads, &step_cfg);
        Mae::<B>::loss(&fwd.masking, &block_on(be.read(&fwd.losses)))
    })
}

/// The Swin step: a Swin-T-like model at img 32 (patch 2, window 4, embed 48, depths
/// 2-2-6-2, heads 3-6-12-24; the last stage's 2x2 map clamps its window), supervised with
/// cross-entropy, gradient clipping and AdamW as the ViT step.
fn bench_swin<B: Probe>(be: &B, args: &Args, best: f64, log: &dyn Fn(&str)) -> Value {
    let cfg = SwinConfig {
        img_size: [32, 32],
        patch_size: 2,
        in_chans: 3,
        embed_dim: 48,
        depths: if args.quick { vec![2, 2] } else { vec![2, 2, 6, 2] },
        num_heads: if args.quick { vec![3, 6] } else { vec![3, 6, 12, 24] },
        window_size: WindowSize::One(4),
        num_classes: 10,
        ..SwinConfig::default()
    };
    let batch = batch_of(args);
    let model = Swin::init(be, cfg.clone(), 0);
    let grads = model.params.zeros_like(be);
    let mut opt = AdamWState::new(be, &model.params);
    let xb = random_images(be, batch, 11);
    let lb = be.upload_u32(&(0..batch).map(|i| (i % 10) as u32).collect::<Vec<_>>());
    let dloss = be.upload(&vec![1.0 / batch as f32; batch]);
    let step_cfg = StepConfig { lr: 1e-4, clip: Some(1.0), ..StepConfig::default() };
    let what = format!("Swin embed 48 depths {:?} img32 p2 w4", cfg.depths);
    let mut out = time_steps(be, args, &what, batch, cfg.train_step_matmul_flops(batch), best, log, || {
        grads.fill(be, 0.0);
        let fwd = model.forward(be, &xb, batch);
        let logits = fwd.logits.as_ref().expect("the benchmark model has a head");
        let (losses, probs, dlogits) = (be.alloc(batch), be.alloc(batch * 10), be.alloc(batch * 10));
        be.cross_entropy_forward(logits, &lb, &losses, &probs, batch, 10);
        be.cross_entropy_backward(&dloss, &probs, &lb, &dlogits, batch, 10);
        model.backward(be, &fwd, Some(&dlogits), None, None, &grads, None);
        opt.update(be, &model.params, &grads, &step_cfg);
        mean_loss(&block_on(be.read(&losses)))
    });
    out["model"] = json!({ "img_size": 32, "patch_size": 2, "window_size": 4, "embed_dim": 48, "depths": cfg.depths, "num_heads": cfg.num_heads, "batch": batch });
    out
}

pub fn run(args: Args) -> Result<()> {
    let log = |s: &str| {
        if !args.json {
            println!("{s}")
        } else {
            eprintln!("{s}")
        }
    };
    let mut results = Vec::new();
    if args.backend != Which::Cpu {
        match gpu() {
            Ok(g) => {
                log(&format!("GPU: {}", g.adapter_summary()));
                results.push(bench_backend(&g, &args, &log));
            }
            Err(e) if args.backend == Which::Both => log(&format!("GPU: none ({e})")),
            Err(e) => return Err(e),
        }
    }
    if args.backend != Which::Gpu {
        log(&format!("CPU backend ({} threads)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)));
        results.push(bench_backend(&Cpu, &args, &log));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!({ "results": results }))?);
    }
    Ok(())
}
