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
