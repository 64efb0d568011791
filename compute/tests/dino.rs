//! DINO and iBOT against PyTorch: every `dino_*` / `ibot_*` parity fixture in
//! tests/reference/fixtures (`DINOHead`, `DINOLoss`, `iBOTLoss` from dino_official.py) on
//! the CPU backend and on the GPU adapter, within 1e-4 abs / 1e-3 rel.
use std::path::{Path, PathBuf};

use patchwork_compute::fixture::{self, Tolerance};
use patchwork_compute::{block_on, Backend, Cpu, TensorFile};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/reference/fixtures exists")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("dino_") || name.starts_with("ibot_")
        })
        .collect();
    v.sort();
    v
}

fn check_all<B: Backend>(be: &B) {
    let paths = fixtures();
    let cases: Vec<String> = paths.iter().map(|p| fixture::header(&TensorFile::load(p).unwrap()).unwrap().0).collect();
    for case in ["dino_head", "dino_loss", "ibot_loss"] {
        assert!(cases.iter().any(|c| c == case), "no {case} fixture among {paths:?}");
    }
    for path in paths {
        let file = TensorFile::load(&path).unwrap();
        let checks = block_on(fixture::run(be, &file, Tolerance::default())).unwrap();
        let failed: Vec<String> = checks.iter().filter(|c| !c.passed).map(|c| c.to_string()).collect();
        assert!(checks.len() >= 3, "{}: only {} keys checked", path.display(), checks.len());
        assert!(failed.is_empty(), "{} on {}:\n{}", path.display(), be.name(), failed.join("\n"));
        let worst = checks.iter().map(|c| c.max_abs).fold(0f32, f32::max);
        println!("{}: {} keys within tolerance on {} (max abs {worst:.2e})", path.display(), checks.len(), be.name());
        for c in &checks {
            println!("  {c}");
        }
    }
}

#[test]
fn cpu_matches_pytorch_on_every_dino_and_ibot_fixture() {
    check_all(&Cpu);
}

#[test]
fn gpu_matches_pytorch_on_every_dino_and_ibot_fixture() {
    if let Some(gpu) = patchwork_compute::gpu::test_gpu() {
        check_all(&gpu);
    }
}

#[test]
fn a_frozen_weight_g_gradient_in_a_fixture_is_a_failure() {
    let path = fixtures().into_iter().find(|p| p.to_str().unwrap().contains("dino_head_norm")).unwrap();
    let mut file = TensorFile::load(&path).unwrap();
    let g = file.tensors["last_layer.weight_g"].clone();
    file.tensors.insert("expect.grad.last_layer.weight_g".into(), g);
    let checks = block_on(fixture::run(&Cpu, &file, Tolerance::default())).unwrap();
    let failed: Vec<&str> = checks.iter().filter(|c| !c.passed).map(|c| c.key.as_str()).collect();
    assert_eq!(failed, ["expect.grad.last_layer.weight_g"]);
}
