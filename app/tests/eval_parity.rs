//! The Train page's held-out scores are `patchwork eval`'s: the bundled DINO model on the
//! bundled Fashion-MNIST subset (2 000 training images as the memory bank and probe
//! training set, 1 000 test images) gives the kNN and linear-probe accuracy the CLI printed
//! (committed below) within 0.5 percentage points. Runs natively on the CPU backend; the
//! browser runs the same code (`tests/train.rs` runs it there).
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};

use patchwork_app::train::{evaluate, split_from_gz, TrainData};
use patchwork_compute::{Cpu, TensorFile};

/// `patchwork eval --model assets/models/dino-fashion-mnist.safetensors --data assets/fashion-mnist
///  --knn --linear --backend cpu --json`: top-1 kNN and linear probe, percent.
pub const CLI_DINO_SUBSET: (f64, f64) = (64.8, 66.7);

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

pub fn subset() -> TrainData {
    let read = |name: &str| std::fs::read(assets().join("fashion-mnist").join(name)).unwrap();
    let split = |s: &str| {
        split_from_gz(&read(&format!("{s}-images-idx3-ubyte.gz")), &read(&format!("{s}-labels-idx1-ubyte.gz")), s)
            .unwrap()
    };
    let classes = patchwork_compute::idx::FASHION_MNIST_CLASSES.iter().map(|c| c.to_string()).collect();
    TrainData { train: split("train"), test: split("t10k"), classes }
}

#[test]
fn page_scores_match_patchwork_eval_on_the_bundled_subset() {
    let model = TensorFile::load(&assets().join("models/dino-fashion-mnist.safetensors")).unwrap();
    let (knn, linear) = pollster::block_on(evaluate(&Cpu, model, &subset(), 2000, 1000)).unwrap();
    println!("page: kNN {knn:.2}%, linear {linear:.2}%; CLI: {CLI_DINO_SUBSET:?}");
    assert!((knn - CLI_DINO_SUBSET.0).abs() <= 0.5, "kNN {knn} vs the CLI's {}", CLI_DINO_SUBSET.0);
    assert!((linear - CLI_DINO_SUBSET.1).abs() <= 0.5, "linear {linear} vs the CLI's {}", CLI_DINO_SUBSET.1);
}
