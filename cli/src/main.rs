//! `patchwork`: the engine natively. Each subcommand lives in its own module.
use clap::{Parser, Subcommand};

mod backend;
mod bench;
mod info;
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Info(a) => info::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
