//! The home page, served from the release build, in headless Chromium with WebGPU on.
//!
//! Needs a `trunk build --release` in `PATCHWORK_E2E_DIST` (default `dist/`) and chromedriver
//! (`CHROMEDRIVER`, default `/usr/bin/chromedriver`); `scripts/test` provides both.
use std::path::{Path, PathBuf};
use std::time::Duration;

use patchwork_e2e::{serve::serve, webdriver::Browser};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Chromium's binary and flags, from the same `webdriver.json` that wasm-bindgen-test uses.
fn chrome_options() -> (Option<String>, Vec<String>) {
    let path = workspace().join("webdriver.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let options = &json["goog:chromeOptions"];
    let args = options["args"]
        .as_array()
        .expect("webdriver.json: goog:chromeOptions.args")
        .iter()
        .filter_map(|a| a.as_str())
        // Each test run gets its own fresh profile below.
        .filter(|a| !a.starts_with("--user-data-dir"))
        .map(str::to_string)
        .collect();
    (options["binary"].as_str().map(str::to_string), args)
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn home_page_shows_the_device_and_passes_the_kernel_check() {
    let dist = std::env::var_os("PATCHWORK_E2E_DIST").map(PathBuf::from).unwrap_or_else(|| workspace().join("dist"));
    assert!(dist.join("index.html").is_file(), "no release build in {} (run trunk build --release)", dist.display());
    let require_gpu = std::env::var("PATCHWORK_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let chromedriver = std::env::var_os("CHROMEDRIVER").map(PathBuf::from).unwrap_or("/usr/bin/chromedriver".into());
    // target/e2e, spelled without `..`: chromedriver reads the profile path literally.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let profile = out.join(format!("chromium-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();

    let url = serve(&dist).expect("static server");
    let (binary, args) = chrome_options();
    let browser = Browser::start(&chromedriver, binary.as_deref(), &args, &profile).unwrap();
    browser.goto(&url).unwrap();

    let title = browser.execute("return document.title;", serde_json::json!([])).unwrap();
    assert_eq!(title, "Patchwork");
    // SwiftShader compiles pipelines slowly; give the probe a generous minute.
    let summary =
        browser.wait_text("[data-testid=device-summary]", Duration::from_secs(90), |t| !t.is_empty()).unwrap();
    println!("device: {summary}");
    let on_gpu = summary.starts_with("WebGPU adapter:");
    assert!(on_gpu || summary.contains("work runs on the CPU backend"), "unexpected device text: {summary}");
    if require_gpu {
        assert!(on_gpu, "PATCHWORK_REQUIRE_GPU=1 but the page found no WebGPU adapter: {summary}");
    }
    if on_gpu {
        let limits = browser.text("[data-testid=device-limits]").unwrap().unwrap_or_default();
        assert!(limits.contains("maxComputeWorkgroupSizeX"), "limits table lacks maxComputeWorkgroupSizeX: {limits}");
        let check =
            browser.wait_text("[data-testid=kernel-check]", Duration::from_secs(90), |t| !t.is_empty()).unwrap();
        println!("{check}");
        assert!(check.starts_with("kernel check: ok"), "self-check kernel failed: {check}");
        assert!(check.contains("y[0..4] = [1.0, 3.0, 5.0, 7.0]"), "self-check shows wrong values: {check}");
    }

    let shot = out.join("home.png");
    browser.screenshot(&shot).unwrap();
    println!("screenshot: {}", shot.display());
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
}
