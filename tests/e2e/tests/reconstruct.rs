//! The Reconstruct page, served from the release build, in headless Chromium: the default
//! image gives the CLI's numbers, an uploaded photo gives a grid with real pictures, and a
//! text file named `.png` gives a message while the page keeps working. The CPU backend is
//! forced (`?backend=cpu`): SwiftShader would be slower, and the numbers are the CLI's CPU ones.
use std::path::{Path, PathBuf};
use std::time::Duration;

use patchwork_e2e::{chrome_options, serve::serve, webdriver::Browser, workspace};
use serde_json::json;

/// `patchwork reconstruct --model assets/models/mae-fashion-mnist.safetensors
///  --image assets/models/fashion-mnist-test-0.png --seed 0 --backend cpu --json`:
/// `(mask_ratio, mse_masked, mse_mean_fill)`.
const CLI_TEST_0_SEED_0: [(f64, f64, f64); 4] = [
    (0.25, 0.014831325944347919, 0.07432289037390596),
    (0.5, 0.013639519579851725, 0.07356543720506051),
    (0.75, 0.0142825150656265, 0.0762878225024871),
    (0.9, 0.013489576688891662, 0.0823880428697094),
];

/// The grid's rows once every ratio is done for a grid whose label holds `image` (the
/// image's and the model's names are in it): `(ratio, mse, mse_mean_fill)`.
fn finished_rows(browser: &Browser, image: &str) -> Vec<(f64, f64, f64)> {
    finished_rows_within(browser, image, Duration::from_secs(180))
}

fn finished_rows_within(browser: &Browser, image: &str, limit: Duration) -> Vec<(f64, f64, f64)> {
    let start = std::time::Instant::now();
    loop {
        let v = browser
            .execute(
                "const grid = document.querySelector('[data-testid=recon-grid]');
                 const rows = [...document.querySelectorAll('[data-testid=recon-row]')];
                 return { done: grid ? grid.dataset.doneFor : '',
                          rows: rows.map(r => [+r.dataset.ratio, +r.dataset.mse, +r.dataset.mseMeanFill]) };",
                json!([]),
            )
            .unwrap();
        let rows: Vec<(f64, f64, f64)> = serde_json::from_value(v["rows"].clone()).unwrap();
        if v["done"].as_str().is_some_and(|d| d.contains(image)) && rows.len() == 5 {
            return rows;
        }
        assert!(start.elapsed() < limit, "grid not finished for {image}: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn reconstruct_page_matches_the_cli_takes_uploads_and_refuses_non_images() {
    let dist = std::env::var_os("PATCHWORK_E2E_DIST").map(PathBuf::from).unwrap_or_else(|| workspace().join("dist"));
    assert!(dist.join("index.html").is_file(), "no release build in {}", dist.display());
    let chromedriver = std::env::var_os("CHROMEDRIVER").map(PathBuf::from).unwrap_or("/usr/bin/chromedriver".into());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let profile = out.join(format!("chromium-profile-reconstruct-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();

    let url = serve(&dist).expect("static server");
    let (binary, args) = chrome_options();
    let browser = Browser::start(&chromedriver, binary.as_deref(), &args, &profile).unwrap();
    browser.goto(&format!("{url}/?page=reconstruct&backend=cpu&seed=0")).unwrap();

    // The default image is Fashion-MNIST test image 0: the CLI's numbers, to 1e-4 relative.
    let rows = finished_rows(&browser, "Fashion-MNIST test 0");
    for ((ratio, mse, base), (want_ratio, want_mse, want_base)) in rows.iter().zip(CLI_TEST_0_SEED_0) {
        println!("ratio {ratio}: page {mse:.6} / {base:.6}, CLI {want_mse:.6} / {want_base:.6}");
        assert_eq!(*ratio, want_ratio);
        assert!((mse - want_mse).abs() / want_mse < 1e-4, "ratio {ratio}: page {mse} vs CLI {want_mse}");
        assert!((base - want_base).abs() / want_base < 1e-4, "ratio {ratio}: page {base} vs CLI {want_base}");
    }
    assert!(browser.text("[data-testid=backend-in-use]").unwrap().unwrap_or_default().contains("CPU"));

    // A bundled photo through the file input: one row per ratio, pictures that are not flat.
    let photo = workspace().join("assets/photos/heldout/chelsea.jpg");
    browser.upload_file("[data-testid=file-input]", &photo).unwrap();
    let rows = finished_rows(&browser, "chelsea.jpg");
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>()[..4], [0.25, 0.5, 0.75, 0.9]);
    let spread = browser
        .execute(
            "const c = document.querySelector('[data-testid=recon-row] [data-testid=panel-reconstruction]');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let lo = 255, hi = 0;
             for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
             return hi - lo;",
            json!([]),
        )
        .unwrap();
    assert!(spread.as_i64().unwrap_or(0) > 20, "reconstruction is flat: grey levels span {spread}");

    // Text named .png: a message, and the grid stays.
    let fake = out.join("not-an-image.png");
    std::fs::write(&fake, "hello, I am plain text and not a PNG").unwrap();
    browser.upload_file("[data-testid=file-input]", &fake).unwrap();
    let msg = browser
        .wait_text("[data-testid=upload-error]", Duration::from_secs(30), |t| !t.is_empty())
        .unwrap_or_else(|e| panic!("{e}"));
    println!("upload error: {msg}");
    assert!(msg.contains("not-an-image.png") && msg.contains("not an image"), "{msg}");
    let n = browser.execute("return document.querySelectorAll('[data-testid=recon-row]').length;", json!([])).unwrap();
    assert_eq!(n, 5, "the grid went away after a bad upload");

    let shot = out.join("reconstruct.png");
    browser.screenshot(&shot).unwrap();
    println!("screenshot: {}", shot.display());
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
}

/// An MAE with the official ViT-B/16 architecture (`mae_vit_base_patch16`: 224 px, width
/// 768 × 12 blocks, decoder 512 × 8, 112 M parameters), saved as the README's conversion of
/// an official checkpoint saves it — official names, f32, no metadata — is loaded from disk
/// through "Load a checkpoint…", its config read off the shapes, and reconstructs the image.
/// The weights are random (no official file can be downloaded here), so only loading and
/// running are checked, not the pictures. A file that is not a model gets a message.
#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn an_official_vit_b16_checkpoint_loads_from_disk_and_reconstructs() {
    use patchwork_compute::methods::mae::{Mae, MaeConfig};
    use patchwork_compute::{block_on, Cpu};

    let dist = std::env::var_os("PATCHWORK_E2E_DIST").map(PathBuf::from).unwrap_or_else(|| workspace().join("dist"));
    assert!(dist.join("index.html").is_file(), "no release build in {}", dist.display());
    let chromedriver = std::env::var_os("CHROMEDRIVER").map(PathBuf::from).unwrap_or("/usr/bin/chromedriver".into());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    std::fs::create_dir_all(&out).unwrap();

    let ckpt = out.join("mae_vit_base_patch16.safetensors");
    {
        let t = std::time::Instant::now();
        let mae = Mae::init(&Cpu, MaeConfig::default(), 0);
        let mut file = block_on(mae.params.download(&Cpu, ""));
        file.tensors.extend(block_on(mae.fixed.download(&Cpu, "")).tensors);
        assert!(file.metadata.is_empty());
        file.save(&ckpt).unwrap();
        println!(
            "wrote {} ({} MB) in {:.1} s",
            ckpt.display(),
            std::fs::metadata(&ckpt).unwrap().len() >> 20,
            t.elapsed().as_secs_f64()
        );
    }

    let profile = out.join(format!("chromium-profile-checkpoint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let url = serve(&dist).expect("static server");
    let (binary, args) = chrome_options();
    let browser = Browser::start(&chromedriver, binary.as_deref(), &args, &profile).unwrap();
    browser.goto(&format!("{url}/?page=reconstruct&backend=cpu&seed=0")).unwrap();
    finished_rows(&browser, "Fashion-MNIST test 0");

    // Not a model: a message, and the page keeps its grid.
    let fake = out.join("notes.safetensors");
    std::fs::write(&fake, "these are notes, not tensors").unwrap();
    browser.upload_file("[data-testid=model-file]", &fake).unwrap();
    let status = browser
        .wait_text("[data-testid=model-status]", Duration::from_secs(30), |t| t.contains("notes.safetensors"))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("bad model: {status}");
    assert!(status.contains("Model not loaded") && status.contains("not a safetensors model"), "{status}");

    let t = std::time::Instant::now();
    browser.upload_file("[data-testid=model-file]", &ckpt).unwrap();
    let status = browser
        .wait_text("[data-testid=model-status]", Duration::from_secs(300), |t| {
            t.contains("mae_vit_base_patch16") && !t.contains("Loading")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    println!("loaded in {:.1} s: {status}", t.elapsed().as_secs_f64());
    assert!(
        status.contains("config read from its shapes") && status.contains("224×224") && status.contains("196"),
        "{status}"
    );
    let rows = finished_rows_within(&browser, "mae_vit_base_patch16", Duration::from_secs(600));
    println!("reconstructed in {:.1} s: {rows:?}", t.elapsed().as_secs_f64());
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|(_, mse, base)| mse.is_finite() && *mse > 0.0 && *base > 0.0), "{rows:?}");
    let shot = out.join("reconstruct-vit-b16.png");
    browser.screenshot(&shot).unwrap();
    drop(browser);
    let _ = std::fs::remove_file(&ckpt);
    let _ = std::fs::remove_dir_all(&profile);
}
