//! `patchwork verify FIXTURE... [--backend cpu|gpu] [--rtol R] [--atol A]`: recompute
//! every expected tensor of each parity fixture and print its error against PyTorch. A
//! model file among them (no fixture `format`, no `expect.*` tensors, as the
//! `timm_vit_checkpoint*` files beside the fixtures) is skipped and said so.
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
    let t = with_backend(args.backend, Verify { paths: &args.fixtures, tol })?;
    match t.skipped {
        0 => println!("{} passed, {} failed", t.passed, t.failed),
        n => println!("{} passed, {} failed, {n} skipped (model files, not fixtures)", t.passed, t.failed),
    }
    if t.failed > 0 || t.passed == 0 {
        std::process::exit(1);
    }
    Ok(())
}

struct Verify<'a> {
    paths: &'a [PathBuf],
    tol: Tolerance,
}

impl OnBackend for Verify<'_> {
    type Output = Tally;
    fn run<B: Probe>(self, be: &B) -> Tally {
        verify_all(be, self.paths, self.tol)
    }
}

/// Checks passed and failed, and files skipped.
#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

/// A safetensors file that is not a fixture at all: a model's weights.
fn is_model_file(file: &TensorFile) -> bool {
    !file.metadata.contains_key("format") && !file.tensors.keys().any(|k| k.starts_with("expect."))
}

fn verify_all<B: Backend>(be: &B, paths: &[PathBuf], tol: Tolerance) -> Tally {
    let mut t = Tally::default();
    for path in paths {
        let file = match TensorFile::load(path) {
            Ok(f) if is_model_file(&f) => {
                println!("{}: skip, a model file (no fixture `format` or expect.* tensors)", path.display());
                t.skipped += 1;
                continue;
            }
            other => other,
        };
        let result = file.map_err(|e| e.to_string()).and_then(|file| {
            let (case, _) = fixture::header(&file).map_err(|e| e.to_string())?;
            println!("{} (case {case}, backend {})", path.display(), be.name());
            patchwork_compute::block_on(fixture::run(be, &file, tol)).map_err(|e| e.to_string())
        });
        match result {
            Ok(checks) => {
                for c in &checks {
                    println!("  {c}");
                    if c.passed {
                        t.passed += 1
                    } else {
                        t.failed += 1
                    }
                }
                if checks.is_empty() {
                    println!("  FAIL no expect.* tensors to check");
                    t.failed += 1;
                }
            }
            Err(e) => {
                println!("{}: FAIL {e}", path.display());
                t.failed += 1;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's `verify tests/reference/fixtures/*.safetensors` meets the timm
    /// checkpoints there: they are skipped, a fixture is checked, and a file that is not
    /// safetensors still fails.
    #[test]
    fn model_files_are_skipped_and_fixtures_checked() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/fixtures");
        let missing = std::env::temp_dir().join("patchwork-verify-no-such-file.safetensors");
        let paths = [dir.join("timm_vit_checkpoint.safetensors"), dir.join("dino_loss_2crops.safetensors"), missing];
        let t = verify_all(&patchwork_compute::Cpu, &paths, Tolerance::default());
        assert_eq!((t.failed, t.skipped), (1, 1), "{t:?}");
        assert!(t.passed >= 3, "{t:?}");
    }
}
