//! `patchwork verify FIXTURE... [--backend cpu|gpu] [--rtol R] [--atol A]`: recompute
//! every expected tensor of each parity fixture and print its error against PyTorch.
use std::path::PathBuf;

use anyhow::Result;
use patchwork_compute::fixture::{self, Tolerance};
use patchwork_compute::{Backend, TensorFile};

use crate::backend::{with_backend, BackendChoice, OnBackend, Probe};

#[derive(clap::Args)]
pub struct Args {
    /// Fixture files (format patchwork-fixture/1), e.g. tests/reference/fixtures/*.safetensors
    #[arg(required = true)]
    fixtures: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Relative tolerance: max |got − want| / max |want|.
    #[arg(long, default_value_t = 1e-3)]
    rtol: f32,
    /// Absolute tolerance on max |got − want|.
    #[arg(long, default_value_t = 1e-4)]
    atol: f32,
}

pub fn run(args: Args) -> Result<()> {
    let tol = Tolerance { atol: args.atol, rtol: args.rtol };
    let (passed, failed) = with_backend(args.backend, Verify { paths: &args.fixtures, tol })?;
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

struct Verify<'a> {
    paths: &'a [PathBuf],
    tol: Tolerance,
}

impl OnBackend for Verify<'_> {
    type Output = (usize, usize);
    fn run<B: Probe>(self, be: &B) -> (usize, usize) {
        verify_all(be, self.paths, self.tol)
    }
}

fn verify_all<B: Backend>(be: &B, paths: &[PathBuf], tol: Tolerance) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for path in paths {
        let result = TensorFile::load(path).map_err(|e| e.to_string()).and_then(|file| {
            let (case, _) = fixture::header(&file).map_err(|e| e.to_string())?;
            println!("{} (case {case}, backend {})", path.display(), be.name());
            patchwork_compute::block_on(fixture::run(be, &file, tol)).map_err(|e| e.to_string())
        });
        match result {
            Ok(checks) => {
                for c in &checks {
                    println!("  {c}");
                    if c.passed {
                        passed += 1
                    } else {
                        failed += 1
                    }
                }
                if checks.is_empty() {
                    println!("  FAIL no expect.* tensors to check");
                    failed += 1;
                }
            }
            Err(e) => {
                println!("{}: FAIL {e}", path.display());
                failed += 1;
            }
        }
    }
    (passed, failed)
}
