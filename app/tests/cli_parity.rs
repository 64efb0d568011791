//! The page's arithmetic gives the CLI's numbers: for test image 0 of Fashion-MNIST, seed 0
//! and the default ratios, the masked-patch errors equal those `patchwork reconstruct`
//! printed (committed below) within 1e-4 relative. Runs natively on the CPU backend; the
//! browser runs the same code, and the end-to-end test reads the page's numbers.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::rc::Rc;

use patchwork_app::engine::{BackendKind, Engine};
use patchwork_app::reconstruct::{model_input, parse_model, Picture};

/// `patchwork reconstruct --model assets/models/mae-fashion-mnist.safetensors
///  --image assets/models/fashion-mnist-test-0.png --seed 0 --backend cpu --json`:
/// `(mask_ratio, mse_masked, mse_mean_fill)`.
pub const CLI_TEST_0_SEED_0: [(f64, f64, f64); 4] = [
    (0.25, 0.014831325944347919, 0.07432289037390596),
    (0.5, 0.013639519579851725, 0.07356543720506051),
    (0.75, 0.0142825150656265, 0.0762878225024871),
    (0.9, 0.013489576688891662, 0.0823880428697094),
];

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets")
}

#[test]
fn page_errors_match_patchwork_reconstruct_for_test_image_0() {
    let model = parse_model(&std::fs::read(assets().join("models/mae-fashion-mnist.safetensors")).unwrap()).unwrap();
    // The browser hands over RGBA from a canvas; a grey PNG becomes R = G = B, alpha 255.
    let img = image::open(assets().join("models/fashion-mnist-test-0.png")).unwrap().to_rgba8();
    let pic = Picture::new(img.width(), img.height(), img.into_raw());
    let x = model_input(&pic, &model.cfg, &model.norm);
    let engine = pollster::block_on(Engine::load(Rc::new(model), BackendKind::Cpu)).unwrap();
    let ratios: Vec<f64> = CLI_TEST_0_SEED_0.iter().map(|r| r.0).collect();
    let mut rows = Vec::new();
    pollster::block_on(engine.reconstruct(&x, &ratios, 0, |r| rows.push(r), || false)).unwrap();
    assert_eq!(rows.len(), 4);
    for (row, (ratio, mse, base)) in rows.iter().zip(CLI_TEST_0_SEED_0) {
        let rel = |got: f64, want: f64| (got - want).abs() / want;
        println!("ratio {ratio}: page {:.6} / {:.6}, CLI {mse:.6} / {base:.6}", row.mse, row.mse_mean_fill);
        assert!(rel(row.mse, mse) < 1e-4, "ratio {ratio}: page MSE {} vs CLI {mse}", row.mse);
        assert!(
            rel(row.mse_mean_fill, base) < 1e-4,
            "ratio {ratio}: page mean-fill {} vs CLI {base}",
            row.mse_mean_fill
        );
    }
}
