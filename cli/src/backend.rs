//! Choosing the backend a command runs on.
use anyhow::Result;
use patchwork_compute::{Backend, Cpu, Gpu};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The GPU adapter when there is one, else the CPU backend (train, eval, reconstruct and
    /// attention also take the CPU backend over a software adapter such as lavapipe: it is
    /// far faster there).
    Auto,
    Cpu,
    Gpu,
}

/// What a command can ask of any backend beyond the ops: device counters for the bench.
pub trait Probe: Backend {
    /// `(dispatches, submits, bytes of device memory held)` so far; `None` on the CPU.
    fn counters(&self) -> Option<(u64, u64, u64)>;
}

impl Probe for Cpu {
    fn counters(&self) -> Option<(u64, u64, u64)> {
        None
    }
}

impl Probe for Gpu {
    fn counters(&self) -> Option<(u64, u64, u64)> {
        let s = self.stats();
        Some((s.dispatches, s.submits, s.pool_bytes))
    }
}

/// Work generic over the backend (closures cannot be generic, so this is a trait).
pub trait OnBackend {
    type Output;
    fn run<B: Probe>(self, be: &B) -> Self::Output;
}

/// The GPU, or why there is none.
pub fn gpu() -> Result<Gpu> {
    patchwork_compute::block_on(Gpu::new()).map_err(|e| anyhow::anyhow!("{e} (use --backend cpu to run on the CPU)"))
}

pub fn with_backend<T: OnBackend>(choice: BackendChoice, task: T) -> Result<T::Output> {
    match choice {
        BackendChoice::Cpu => Ok(task.run(&Cpu)),
        BackendChoice::Gpu => Ok(task.run(&gpu()?)),
        BackendChoice::Auto => match patchwork_compute::block_on(Gpu::new()) {
            Ok(g) => Ok(task.run(&g)),
            Err(e) => {
                eprintln!("{e}; running on the CPU backend");
                Ok(task.run(&Cpu))
            }
        },
    }
}
