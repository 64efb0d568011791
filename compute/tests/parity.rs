//! The engine against PyTorch: every parity fixture in tests/reference/fixtures (`vit_*`
//! from timm, `mae_*` from the official MAE code), on the CPU backend and on the GPU
//! adapter (lavapipe here), within 1e-4 abs / 1e-3 rel.
use std::path::{Path, PathBuf};

use patchwork_compute::fixture::{self, Tolerance};
use patchwork_compute::{block_on, Backend, Cpu, TensorFile, Vit, VitConfig};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/fixtures")
}

fn parity_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/reference/fixtures exists")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("vit_") || name.starts_with("mae_")
        })
        .collect();
    v.sort();
    assert!(v.len() >= 6, "expected the committed vit and mae fixtures, found {v:?}");
    v
}

pub fn check_all<B: Backend>(be: &B) {
    for path in parity_fixtures() {
        let file = TensorFile::load(&path).unwrap();
        let checks = block_on(fixture::run(be, &file, Tolerance::default())).unwrap();
        let failed: Vec<String> = checks.iter().filter(|c| !c.passed).map(|c| c.to_string()).collect();
        assert!(checks.len() > 20, "{}: only {} keys checked", path.display(), checks.len());
        assert!(failed.is_empty(), "{} on {}:\n{}", path.display(), be.name(), failed.join("\n"));
        println!("{}: {} keys within tolerance on {}", path.display(), checks.len(), be.name());
    }
}

#[test]
fn cpu_matches_pytorch_on_every_fixture() {
    check_all(&Cpu);
}

#[test]
fn gpu_matches_pytorch_on_every_fixture() {
    if let Some(gpu) = patchwork_compute::gpu::test_gpu() {
        check_all(&gpu);
    }
}

#[test]
fn timm_checkpoints_load_unchanged_in_f32_f16_bf16() {
    let dir = fixtures_dir();
    let f32_file = TensorFile::load(&dir.join("timm_vit_checkpoint.safetensors")).unwrap();
    let cfg = VitConfig::from_json(&f32_file.metadata["config"]).unwrap();
    let x: Vec<f32> = (0..2 * 3 * 32 * 32).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let run = |file: &TensorFile| {
        let model = Vit::from_file(&Cpu, cfg.clone(), file).unwrap();
        let fwd = model.forward(&Cpu, &Cpu.upload(&x), 2);
        block_on(Cpu.read(fwd.logits.as_ref().unwrap()))
    };
    let reference = run(&f32_file);
    for (name, tol) in [("timm_vit_checkpoint_f16.safetensors", 1e-2), ("timm_vit_checkpoint_bf16.safetensors", 5e-2)] {
        let file = TensorFile::load(&dir.join(name)).unwrap();
        let got = run(&file);
        let max = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max < tol, "{name}: logits differ from the f32 checkpoint by {max}");
    }
}

#[test]
fn wrong_checkpoints_are_named_precisely() {
    let dir = fixtures_dir();
    let mut file = TensorFile::load(&dir.join("timm_vit_checkpoint.safetensors")).unwrap();
    let cfg = VitConfig::from_json(&file.metadata["config"]).unwrap();
    let deeper = VitConfig { depth: cfg.depth + 1, ..cfg.clone() };
    let e = Vit::from_file(&Cpu, deeper, &file).err().unwrap().to_string();
    assert!(e.contains("missing") && e.contains("blocks.2.norm1.weight"), "{e}");
    let wider = VitConfig { num_classes: 7, ..cfg.clone() };
    let e = Vit::from_file(&Cpu, wider, &file).err().unwrap().to_string();
    assert!(e.contains("`head.weight` has shape [10, 48], the model expects [7, 48]"), "{e}");
    file.tensors.insert("blocks.0.attn.extra".into(), patchwork_compute::Tensor::f32(vec![1], vec![0.0]));
    let e = Vit::from_file(&Cpu, cfg, &file).err().unwrap().to_string();
    assert!(e.contains("unexpected") && e.contains("blocks.0.attn.extra"), "{e}");
}

#[test]
fn verify_fails_on_unknown_keys_and_wrong_values() {
    let path = parity_fixtures().into_iter().find(|p| p.to_str().unwrap().contains("vit_")).unwrap();
    let mut file = TensorFile::load(&path).unwrap();
    let logits = file.tensors["expect.logits"].clone();
    file.tensors.insert("expect.something_new".into(), logits.clone());
    let mut wrong = logits.clone();
    if let patchwork_compute::weights::Data::F32(v) = &mut wrong.data {
        v[0] += 0.01;
    }
    file.tensors.insert("expect.logits".into(), wrong);
    let checks = block_on(fixture::run(&Cpu, &file, Tolerance::default())).unwrap();
    let failed: Vec<&str> = checks.iter().filter(|c| !c.passed).map(|c| c.key.as_str()).collect();
    assert_eq!(failed, ["expect.logits", "expect.something_new"]);
    file.metadata.insert("format".into(), "patchwork-fixture/9".into());
    let e = block_on(fixture::run(&Cpu, &file, Tolerance::default())).err().unwrap().to_string();
    assert!(e.contains("malformed") && e.contains("patchwork-fixture/9"), "{e}");
}
