//! What the end-to-end tests need and nothing more: a static file server for the release
//! build and a small WebDriver client for chromedriver.
pub mod serve;
pub mod webdriver;

use std::path::{Path, PathBuf};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Chromium's binary and flags, from the same `webdriver.json` that wasm-bindgen-test uses.
pub fn chrome_options() -> (Option<String>, Vec<String>) {
    let path = workspace().join("webdriver.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let options = &json["goog:chromeOptions"];
    let args = options["args"]
        .as_array()
        .expect("webdriver.json: goog:chromeOptions.args")
        .iter()
        .filter_map(|a| a.as_str())
        // Each test gives its browser a fresh profile of its own.
        .filter(|a| !a.starts_with("--user-data-dir"))
        .map(str::to_string)
        .collect();
    (options["binary"].as_str().map(str::to_string), args)
}

/// The release build (`PATCHWORK_E2E_DIST`, default `dist/`) served on a local port and
/// opened in headless Chromium (`CHROMEDRIVER`, default `/usr/bin/chromedriver`) with a fresh
/// profile under `out`. Derefs to the [`webdriver::Browser`]; dropping it closes the browser
/// and removes the profile.
pub struct Page {
    browser: Option<webdriver::Browser>,
    pub url: String,
    pub out: PathBuf,
    profile: PathBuf,
}

impl Page {
    /// Open `?{query}` of the app; `name` tells this test's profile from others'.
    pub fn open(out: &Path, name: &str, query: &str) -> Page {
        let dist =
            std::env::var_os("PATCHWORK_E2E_DIST").map(PathBuf::from).unwrap_or_else(|| workspace().join("dist"));
        assert!(
            dist.join("index.html").is_file(),
            "no release build in {} (run trunk build --release)",
            dist.display()
        );
        let chromedriver =
            std::env::var_os("CHROMEDRIVER").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromedriver".into());
        let profile = out.join(format!("chromium-profile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let url = format!("{}?{query}", serve::serve(&dist).expect("static server"));
        let (binary, args) = chrome_options();
        let browser = webdriver::Browser::start(&chromedriver, binary.as_deref(), &args, &profile).unwrap();
        browser.goto(&url).unwrap();
        Page { browser: Some(browser), url, out: out.to_path_buf(), profile }
    }

    /// Save a screenshot as `out/NAME` and print where.
    pub fn screenshot(&self, name: &str) {
        let shot = self.out.join(name);
        self.browser.as_ref().unwrap().screenshot(&shot).unwrap();
        println!("screenshot: {}", shot.display());
    }
}

impl std::ops::Deref for Page {
    type Target = webdriver::Browser;
    fn deref(&self) -> &webdriver::Browser {
        self.browser.as_ref().unwrap()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        drop(self.browser.take());
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
