//! `patchwork`: the engine natively. Each subcommand lives in its own module.
use clap::{Parser, Subcommand};

mod info;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Info(a) => info::run(a),
    }
}
