//! Saved training runs in the browser's Origin Private File System, run by wasm-bindgen-test
//! in headless Chromium. Each test uses its own run ids and deletes what it stored.
#![cfg(target_arch = "wasm32")]

use patchwork_app::store::{self, SavedRun, StoreError};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn run(id: &str, step: usize, checkpoint: Vec<u8>, saved_unix_ms: f64) -> SavedRun {
    SavedRun {
        id: id.into(),
        config_json: format!("{{\"method\":\"mae\",\"id\":\"{id}\"}}"),
        curves_json: format!("{{\"loss\":[2.0,1.5],\"step\":{step}}}"),
        checkpoint,
        step,
        saved_unix_ms,
    }
}

/// Bytes that differ at every offset modulo 251, so a shifted or truncated read shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn assert_same_bytes(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "checkpoint length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "first mismatch at byte {i}: got {:?}, want {:?}",
            &got[i..(i + 8).min(got.len())],
            &want[i..(i + 8).min(want.len())]
        );
    }
}

#[wasm_bindgen_test]
async fn five_megabyte_checkpoint_round_trips_byte_exact() {
    let id = "test-round-trip";
    let saved = run(id, 200, pattern(5 << 20, 0x5a), js_sys::Date::now());
    store::save(&saved).await.unwrap();
    let loaded = store::load(id).await.unwrap().expect("saved run loads");
    assert_same_bytes(&loaded.checkpoint, &saved.checkpoint);
    assert_eq!(
        (&loaded.id, &loaded.config_json, &loaded.curves_json),
        (&saved.id, &saved.config_json, &saved.curves_json)
    );
    assert_eq!((loaded.step, loaded.saved_unix_ms), (saved.step, saved.saved_unix_ms));
    let summary = store::list().await.unwrap().into_iter().find(|s| s.id == id).expect("listed");
    assert!(summary.bytes > 5 << 20, "summary counts the stored bytes: {summary:?}");
    let (usage, quota) = store::estimate().await.expect("estimate");
    console_log!("storage estimate: usage {usage} of quota {quota}");
    store::delete(id).await.unwrap();
}

#[wasm_bindgen_test]
async fn latest_is_the_more_recently_saved_run() {
    let (older, newer) = ("test-latest-older", "test-latest-newer");
    // Later than any real save, so leftovers from other runs cannot win.
    let now = js_sys::Date::now() + 1e9;
    store::save(&run(newer, 10, vec![1; 64], now + 1000.0)).await.unwrap();
    store::save(&run(older, 20, vec![2; 64], now)).await.unwrap();
    let latest = store::latest().await.unwrap().expect("a run is stored");
    assert_eq!((latest.id.as_str(), latest.step), (newer, 10));
    store::delete(older).await.unwrap();
    store::delete(newer).await.unwrap();
}

#[wasm_bindgen_test]
async fn second_save_of_a_run_replaces_the_first() {
    let id = "test-replace";
    store::save(&run(id, 100, pattern(1000, 1), 1.0)).await.unwrap();
    let second = run(id, 200, pattern(3000, 2), 2.0);
    store::save(&second).await.unwrap();
    let third = run(id, 300, pattern(500, 3), 3.0);
    store::save(&third).await.unwrap();
    let loaded = store::load(id).await.unwrap().unwrap();
    assert_eq!(loaded.step, 300);
    assert_same_bytes(&loaded.checkpoint, &third.checkpoint);
    assert_eq!(loaded.curves_json, third.curves_json);
    let listed: Vec<_> = store::list().await.unwrap().into_iter().filter(|s| s.id == id).collect();
    assert_eq!(listed.len(), 1, "one entry per run: {listed:?}");
    store::delete(id).await.unwrap();
}

#[wasm_bindgen_test]
async fn quota_failure_keeps_the_previous_checkpoint() {
    let id = "test-quota";
    let kept = run(id, 200, pattern(4096, 7), 1.0);
    store::save(&kept).await.unwrap();
    store::set_fail_next_save_with_quota(true);
    let err = store::save(&run(id, 300, pattern(8192, 8), 2.0)).await.unwrap_err();
    assert!(matches!(err, StoreError::Quota(_)), "{err:?}");
    assert_eq!(err.to_string(), "browser storage is full (quota exceeded): the last checkpoint at step 200 is kept");
    let loaded = store::load(id).await.unwrap().expect("previous checkpoint still there");
    assert_eq!(loaded.step, 200);
    assert_same_bytes(&loaded.checkpoint, &kept.checkpoint);
    // The flag is used up: the next save goes through.
    store::save(&run(id, 300, pattern(8192, 8), 2.0)).await.unwrap();
    assert_eq!(store::load(id).await.unwrap().unwrap().step, 300);
    store::delete(id).await.unwrap();
}

#[wasm_bindgen_test]
async fn delete_removes_the_run() {
    let id = "test-delete";
    store::save(&run(id, 5, vec![9; 16], 1.0)).await.unwrap();
    store::delete(id).await.unwrap();
    assert_eq!(store::load(id).await.unwrap(), None);
    assert!(store::list().await.unwrap().iter().all(|s| s.id != id));
    store::delete(id).await.unwrap();
}

#[wasm_bindgen_test]
async fn loading_an_unknown_run_is_none() {
    assert_eq!(store::load("test-never-saved").await.unwrap(), None);
    assert_eq!(store::load("../odd/id with spaces").await.unwrap(), None);
}
