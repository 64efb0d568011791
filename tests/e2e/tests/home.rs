//! The home page, served from the release build, in headless Chromium with WebGPU on.
//!
//! Needs a `trunk build --release` in `PATCHWORK_E2E_DIST` (default `dist/`) and chromedriver
//! (`CHROMEDRIVER`, default `/usr/bin/chromedriver`); `scripts/test` provides both.
use std::path::{Path, PathBuf};
use std::time::Duration;

use patchwork_e2e::{chrome_options, serve::serve, webdriver::Browser, workspace};

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
    // SwiftShader compiles pipelines slowly; give the probe a generous minute. The device
    // panel sits behind the header's badge: open it.
    browser.wait_text("[data-testid=device-badge-text]", Duration::from_secs(90), |t| !t.is_empty()).unwrap();
    browser
        .execute("document.querySelector('[data-testid=device-badge]').open = true;", serde_json::json!([]))
        .unwrap();
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
