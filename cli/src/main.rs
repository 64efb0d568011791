//! `patchwork`: the engine natively. Each subcommand lives in its own module.
use clap::{Parser, Subcommand};

mod attention;
mod backend;
mod bench;
mod data;
mod eval;
mod info;
mod progress;
mod reconstruct;
mod train;
mod verify;

#[derive(Parser)]
#[command(name = "patchwork", version, about = "Self-supervised Vision Transformers on your own GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the native GPU adapter (name, backend, limits, features), or say CPU only.
    Info(info::Args),
    /// Check the engine against PyTorch parity fixtures (tests/reference/fixtures).
    Verify(verify::Args),
    /// Benchmark matmuls and a ViT training step on the CPU backend and the GPU.
    Bench(bench::Args),
    /// Training (MAE, DINO, iBOT, or the supervised baseline) on Fashion-MNIST, the bundled photos or a folder of images.
    Train(Box<train::Args>),
    /// Reconstruct masked images with a trained MAE: a PNG grid, or the masked-patch error.
    Reconstruct(reconstruct::Args),
    /// Each head's CLS attention over an image, their mean and DINO's 60%-mass mask (PNG or JSON).
    Attention(attention::Args),
    /// Frozen-feature evaluation of a ViT: DINO's kNN and a linear probe, beside baselines.
    Eval(eval::Args),
}

/// Create the folders an output file goes into, before the work that fills it (so a mistyped
/// folder costs nothing, and a new one needs no `mkdir`).
pub(crate) fn create_parent(path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display())),
        None => Ok(()),
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Info(a) => info::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Train(a) => train::run(*a),
        Command::Reconstruct(a) => reconstruct::run(a),
        Command::Attention(a) => attention::run(a),
        Command::Eval(a) => eval::run(a),
    }
}
