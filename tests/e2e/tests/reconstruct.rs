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

/// The grid's rows once every ratio is done: `(ratio, mse, mse_mean_fill)`.
fn finished_rows(browser: &Browser, image: &str) -> Vec<(f64, f64, f64)> {
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
        assert!(start.elapsed() < Duration::from_secs(180), "grid not finished for {image}: {v}");
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
