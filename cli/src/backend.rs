//! Choosing the backend a command runs on.
use anyhow::Result;
use patchwork_compute::Cpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The GPU adapter when there is one, else the CPU backend.
    Auto,
    Cpu,
    Gpu,
}

/// Run `f` on the chosen backend. Generic code cannot be handed a `dyn Backend`, so each
/// backend gets its own monomorphised call.
pub fn with_backend<R>(choice: BackendChoice, f: impl Fn(&Cpu) -> R) -> Result<R> {
    match choice {
        BackendChoice::Cpu | BackendChoice::Auto => Ok(f(&Cpu)),
        BackendChoice::Gpu => anyhow::bail!("the GPU backend is not built yet"),
    }
}
