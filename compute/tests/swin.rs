//! Swin against PyTorch: every `swin_*` parity fixture in tests/reference/fixtures (timm's
//! `SwinTransformer`, see `generate_swin.py`) on the CPU backend and on the GPU adapter
//! (lavapipe here), within 1e-4 abs / 1e-3 rel as ViT; and checkpoints round-trip.
use std::path::{Path, PathBuf};

use patchwork_compute::fixture::{self, Tolerance};
use patchwork_compute::{block_on, Backend, Cpu, Swin, SwinConfig, TensorFile};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/fixtures")
}

fn swin_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/reference/fixtures exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("swin_"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "expected the committed swin fixtures, found {v:?}");
    v
}

fn check_all<B: Backend>(be: &B) {
    for path in swin_fixtures() {
        let file = TensorFile::load(&path).unwrap();
        let checks = block_on(fixture::run(be, &file, Tolerance::default())).unwrap();
        let failed: Vec<String> = checks.iter().filter(|c| !c.passed).map(|c| c.to_string()).collect();
        assert!(checks.len() > 40, "{}: only {} keys checked", path.display(), checks.len());
        assert!(failed.is_empty(), "{} on {}:\n{}", path.display(), be.name(), failed.join("\n"));
        let worst = checks.iter().map(|c| c.max_abs).fold(0f32, f32::max);
        println!("{}: {} keys within tolerance on {} (max abs {worst:.2e})", path.display(), checks.len(), be.name());
    }
}

#[test]
fn swin_cpu_matches_timm_on_every_fixture() {
    check_all(&Cpu);
}

#[test]
fn swin_gpu_matches_timm_on_every_fixture() {
    if let Some(gpu) = patchwork_compute::gpu::test_gpu() {
        check_all(&gpu);
    }
}

#[test]
fn swin_weights_save_and_load_under_timm_names() {
    let path = fixtures_dir().join("swin_tiny.safetensors");
    let file = TensorFile::load(&path).unwrap();
    let cfg = SwinConfig::from_json(&file.metadata["config"]).unwrap();
    let model = Swin::from_file(&Cpu, cfg.clone(), &file).unwrap();
    let saved = block_on(model.params.download(&Cpu, ""));
    assert!(saved.tensors.contains_key("layers.0.blocks.1.attn.relative_position_bias_table"));
    assert!(saved.tensors.contains_key("layers.1.downsample.reduction.weight"));
    assert!(saved.tensors.contains_key("head.fc.weight"));
    let reloaded = TensorFile::from_bytes(&saved.to_bytes()).unwrap();
    let again = Swin::from_file(&Cpu, cfg.clone(), &reloaded).unwrap();
    let x: Vec<f32> = (0..3 * 32 * 32).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let logits = |m: &Swin<Cpu>| block_on(Cpu.read(m.forward(&Cpu, &Cpu.upload(&x), 1).logits.as_ref().unwrap()));
    assert_eq!(logits(&model), logits(&again));

    let deeper = SwinConfig { depths: vec![2, 3], ..cfg };
    let e = Swin::from_file(&Cpu, deeper, &file).err().unwrap().to_string();
    assert!(e.contains("missing") && e.contains("layers.1.blocks.2.attn.relative_position_bias_table"), "{e}");
}
