//! Training runs kept in the browser's Origin Private File System (OPFS), so a reload can
//! resume from the last checkpoint with its curves.
//!
//! Layout, one directory per run under `patchwork-runs/`:
//!
//! ```text
//! patchwork-runs/<escaped id>/manifest.json   {"id", "slot": "a"|"b", "step", "saved_unix_ms", "bytes"}
//! patchwork-runs/<escaped id>/slot-a.bin      header, config JSON, curves JSON, checkpoint
//! patchwork-runs/<escaped id>/slot-b.bin      (the other slot, only while a save is in flight)
//! ```
//!
//! A save writes the slot the manifest does *not* name, then rewrites the manifest, then
//! removes the old slot. Each file write goes through `createWritable`, which the browser
//! commits only on `close()`, so a failed or interrupted save leaves the manifest pointing
//! at the previous, complete slot. Saves of one run must not overlap; a second concurrent
//! save of the same id is refused.
//!
//! The functions compile on every target (the native build of the app needs them to), but
//! they only work in a browser.
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// One training run as the Train page saves it.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedRun {
    pub id: String,
    pub config_json: String,
    pub curves_json: String,
    /// The engine's checkpoint (weights and optimiser state), opaque here.
    pub checkpoint: Vec<u8>,
    pub step: usize,
    pub saved_unix_ms: f64,
}

/// What [`list`] and [`latest`] know of a run without reading its checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub id: String,
    pub step: usize,
    pub saved_unix_ms: f64,
    /// Size of the stored slot file (config, curves and checkpoint together).
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StoreError {
    /// No OPFS here (insecure context, private mode, old browser).
    Unavailable(String),
    /// The browser refused to store more; the message says which checkpoint is kept.
    Quota(String),
    /// Stored data that does not parse.
    Corrupt(String),
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(m) => {
                write!(f, "browser storage is unavailable, so training runs cannot be saved here ({m})")
            }
            StoreError::Quota(m) => write!(f, "browser storage is full (quota exceeded): {m}"),
            StoreError::Corrupt(m) => write!(f, "the saved run is damaged and cannot be resumed: {m}"),
            StoreError::Other(m) => write!(f, "browser storage failed: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

thread_local! {
    /// Saves to let through before one fails with a quota error (None: never fail).
    static FAIL_SAVE_WITH_QUOTA_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    static SAVING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// For tests (and a "simulate a full disk" control): when on, the next [`save`] fails with
/// [`StoreError::Quota`] as if the browser had refused the write, without touching the
/// stored data. The flag clears itself once used.
pub fn set_fail_next_save_with_quota(on: bool) {
    fail_save_with_quota_after(on.then_some(0));
}

/// For tests: let `saves` more saves through, then fail the next one as
/// [`set_fail_next_save_with_quota`] does (`None` turns it off).
pub fn fail_save_with_quota_after(saves: Option<usize>) {
    FAIL_SAVE_WITH_QUOTA_AFTER.with(|f| f.set(saves));
}

const ROOT: &str = "patchwork-runs";
const MANIFEST: &str = "manifest.json";
/// Slot file format: `MAGIC`, then four little-endian u64: step, config length, curves
/// length, checkpoint length; then the three byte strings in that order.
const MAGIC: &[u8; 8] = b"PWRUN\x01\r\n";
const HEADER_LEN: usize = 8 + 4 * 8;

#[derive(Serialize, Deserialize)]
struct Manifest {
    id: String,
    slot: String,
    step: usize,
    saved_unix_ms: f64,
    bytes: u64,
}

impl Manifest {
    fn summary(&self) -> RunSummary {
        RunSummary { id: self.id.clone(), step: self.step, saved_unix_ms: self.saved_unix_ms, bytes: self.bytes }
    }
}

fn slot_file(slot: &str) -> String {
    format!("slot-{slot}.bin")
}

/// A run id as a file name: ASCII letters, digits, `-` and `_` as they are, every other
/// byte as `~XX`, so no id can be `.`, `..`, contain `/`, or collide with another.
fn dir_name(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("~{b:02X}")
            }
        })
        .collect()
}

fn slot_header(run: &SavedRun) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    for n in [run.step, run.config_json.len(), run.curves_json.len(), run.checkpoint.len()] {
        header.extend_from_slice(&(n as u64).to_le_bytes());
    }
    header
}

/// `(step, config_json, curves_json, checkpoint)` from a slot file's bytes.
fn decode_slot(bytes: &[u8]) -> Result<(usize, String, String, Vec<u8>), String> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(format!("not a Patchwork checkpoint ({} bytes, bad header)", bytes.len()));
    }
    let field = |i: usize| u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().unwrap());
    let (step, lens) = (field(0), [field(1), field(2), field(3)]);
    let total = lens.iter().try_fold(HEADER_LEN as u64, |acc, &n| acc.checked_add(n));
    if total != Some(bytes.len() as u64) {
        return Err(format!("cut short or padded: {} bytes, header says {lens:?} after the header", bytes.len()));
    }
    let (config, rest) = bytes[HEADER_LEN..].split_at(lens[0] as usize);
    let (curves, checkpoint) = rest.split_at(lens[1] as usize);
    let text = |b: &[u8], what: &str| String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"));
    Ok((step as usize, text(config, "config")?, text(curves, "curves")?, checkpoint.to_vec()))
}

fn js_message(e: &JsValue) -> String {
    if let Some(d) = e.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", d.name(), d.message());
    }
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn dom_name(e: &JsValue) -> Option<String> {
    e.dyn_ref::<web_sys::DomException>().map(|d| d.name())
}

fn to_store_error(e: JsValue) -> StoreError {
    match dom_name(&e).as_deref() {
        Some("QuotaExceededError") => StoreError::Quota(js_message(&e)),
        Some("SecurityError" | "NotAllowedError") => StoreError::Unavailable(js_message(&e)),
        _ => StoreError::Other(js_message(&e)),
    }
}

async fn wait(p: js_sys::Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

async fn root() -> Result<web_sys::FileSystemDirectoryHandle, StoreError> {
    let unavailable = |m: &str| StoreError::Unavailable(m.to_string());
    let navigator = web_sys::window().ok_or_else(|| unavailable("no window"))?.navigator();
    // `navigator.storage` is missing outside secure contexts; calling through web-sys's
    // binding would then throw a TypeError we cannot catch.
    let storage = js_sys::Reflect::get(&navigator, &"storage".into()).unwrap_or(JsValue::UNDEFINED);
    if storage.is_undefined() || !js_sys::Reflect::has(&storage, &"getDirectory".into()).unwrap_or(false) {
        return Err(unavailable("this browser has no Origin Private File System"));
    }
    let storage: web_sys::StorageManager = storage.unchecked_into();
    let top: web_sys::FileSystemDirectoryHandle =
        wait(storage.get_directory()).await.map_err(|e| StoreError::Unavailable(js_message(&e)))?.unchecked_into();
    subdir(&top, ROOT, true).await?.ok_or_else(|| StoreError::Other(format!("cannot create {ROOT}")))
}

/// The directory `name` in `dir`; `None` where it does not exist and `create` is off.
async fn subdir(
    dir: &web_sys::FileSystemDirectoryHandle,
    name: &str,
    create: bool,
) -> Result<Option<web_sys::FileSystemDirectoryHandle>, StoreError> {
    let opts = web_sys::FileSystemGetDirectoryOptions::new();
    opts.set_create(create);
    match wait(dir.get_directory_handle_with_options(name, &opts)).await {
        Ok(h) => Ok(Some(h.unchecked_into())),
        Err(e) if dom_name(&e).as_deref() == Some("NotFoundError") => Ok(None),
        Err(e) => Err(to_store_error(e)),
    }
}

/// The bytes of file `name` in `dir`; `None` where it does not exist.
async fn read(dir: &web_sys::FileSystemDirectoryHandle, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let handle: web_sys::FileSystemFileHandle = match wait(dir.get_file_handle(name)).await {
        Ok(h) => h.unchecked_into(),
        Err(e) if dom_name(&e).as_deref() == Some("NotFoundError") => return Ok(None),
        Err(e) => return Err(to_store_error(e)),
    };
    let file: web_sys::File = wait(handle.get_file()).await.map_err(to_store_error)?.unchecked_into();
    let buf = wait(file.array_buffer()).await.map_err(to_store_error)?;
    Ok(Some(js_sys::Uint8Array::new(&buf).to_vec()))
}

/// Replace file `name` in `dir` with `parts`, concatenated. The browser keeps the old
/// contents until `close()` succeeds; on any failure the new contents are discarded.
async fn write(dir: &web_sys::FileSystemDirectoryHandle, name: &str, parts: &[&[u8]]) -> Result<(), JsValue> {
    let opts = web_sys::FileSystemGetFileOptions::new();
    opts.set_create(true);
    let handle: web_sys::FileSystemFileHandle =
        wait(dir.get_file_handle_with_options(name, &opts)).await?.unchecked_into();
    let stream: web_sys::FileSystemWritableFileStream = wait(handle.create_writable()).await?.unchecked_into();
    let written = async {
        for part in parts {
            // A copy owned by JS: a view into wasm memory could be detached by the time the
            // browser reads it, since the write is asynchronous.
            let chunk = js_sys::Uint8Array::from(*part);
            wait(stream.write_with_js_u8_array(&chunk)?).await?;
        }
        wait(stream.close()).await
    }
    .await;
    if let Err(e) = written {
        let _ = wait(stream.abort()).await;
        return Err(e);
    }
    Ok(())
}

async fn remove(dir: &web_sys::FileSystemDirectoryHandle, name: &str, recursive: bool) -> Result<(), JsValue> {
    let opts = web_sys::FileSystemRemoveOptions::new();
    opts.set_recursive(recursive);
    match wait(dir.remove_entry_with_options(name, &opts)).await {
        Err(e) if dom_name(&e).as_deref() != Some("NotFoundError") => Err(e),
        _ => Ok(()),
    }
}

async fn read_manifest(dir: &web_sys::FileSystemDirectoryHandle) -> Result<Option<Manifest>, StoreError> {
    let Some(bytes) = read(dir, MANIFEST).await? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt(format!("{MANIFEST}: {e}")))
}

/// What a quota failure keeps, for its message.
fn quota_error(kept: Option<&Manifest>) -> StoreError {
    StoreError::Quota(match kept {
        Some(m) => format!("the last checkpoint at step {} is kept", m.step),
        None => "no checkpoint of this run could be saved".to_string(),
    })
}

/// Removes the run id from the set of saves in flight when the save ends, however it ends.
struct SavingGuard(String);

impl Drop for SavingGuard {
    fn drop(&mut self) {
        SAVING.with(|s| s.borrow_mut().remove(&self.0));
    }
}

/// Store `run`, replacing its previous checkpoint only once the new one is complete.
pub async fn save(run: &SavedRun) -> Result<(), StoreError> {
    if run.id.is_empty() {
        return Err(StoreError::Other("a run needs a non-empty id".into()));
    }
    if !SAVING.with(|s| s.borrow_mut().insert(run.id.clone())) {
        return Err(StoreError::Other(format!("run “{}” is already being saved", run.id)));
    }
    let _guard = SavingGuard(run.id.clone());
    let runs = root().await?;
    let dir = subdir(&runs, &dir_name(&run.id), true)
        .await?
        .ok_or_else(|| StoreError::Other("cannot create run directory".into()))?;
    // A damaged manifest must not block saving over it.
    let old = read_manifest(&dir).await.unwrap_or(None);
    let fail = FAIL_SAVE_WITH_QUOTA_AFTER.with(|f| match f.get() {
        Some(0) => {
            f.set(None);
            true
        }
        Some(n) => {
            f.set(Some(n - 1));
            false
        }
        None => false,
    });
    if fail {
        return Err(quota_error(old.as_ref()));
    }
    let slot = if old.as_ref().is_some_and(|m| m.slot == "a") { "b" } else { "a" };
    let header = slot_header(run);
    let parts: [&[u8]; 4] = [&header, run.config_json.as_bytes(), run.curves_json.as_bytes(), &run.checkpoint];
    let bytes = parts.iter().map(|p| p.len() as u64).sum();
    let fail = |e: JsValue| match to_store_error(e) {
        StoreError::Quota(_) => quota_error(old.as_ref()),
        other => other,
    };
    if let Err(e) = write(&dir, &slot_file(slot), &parts).await {
        let _ = remove(&dir, &slot_file(slot), false).await;
        return Err(fail(e));
    }
    let manifest =
        Manifest { id: run.id.clone(), slot: slot.into(), step: run.step, saved_unix_ms: run.saved_unix_ms, bytes };
    let json = serde_json::to_vec(&manifest).map_err(|e| StoreError::Other(e.to_string()))?;
    if let Err(e) = write(&dir, MANIFEST, &[&json]).await {
        let _ = remove(&dir, &slot_file(slot), false).await;
        return Err(fail(e));
    }
    if let Some(old) = old.filter(|m| m.slot != slot) {
        // Only frees space; a leftover old slot is ignored and overwritten by the next save.
        let _ = remove(&dir, &slot_file(&old.slot), false).await;
    }
    Ok(())
}

/// The run `id` as last saved completely; `None` where there is none.
pub async fn load(id: &str) -> Result<Option<SavedRun>, StoreError> {
    if id.is_empty() {
        return Ok(None);
    }
    let Some(dir) = subdir(&root().await?, &dir_name(id), false).await? else { return Ok(None) };
    let Some(manifest) = read_manifest(&dir).await? else { return Ok(None) };
    let name = slot_file(&manifest.slot);
    let bytes = read(&dir, &name).await?.ok_or_else(|| StoreError::Corrupt(format!("{name} is missing")))?;
    if bytes.len() as u64 != manifest.bytes {
        return Err(StoreError::Corrupt(format!("{name} has {} bytes, expected {}", bytes.len(), manifest.bytes)));
    }
    let (step, config_json, curves_json, checkpoint) =
        decode_slot(&bytes).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))?;
    if step != manifest.step {
        return Err(StoreError::Corrupt(format!("{name} holds step {step}, the manifest says {}", manifest.step)));
    }
    Ok(Some(SavedRun {
        id: manifest.id,
        config_json,
        curves_json,
        checkpoint,
        step,
        saved_unix_ms: manifest.saved_unix_ms,
    }))
}

/// Every stored run, most recently saved first. Runs whose first save never completed are
/// left out; a run with a damaged manifest makes the whole list fail with `Corrupt`.
pub async fn list() -> Result<Vec<RunSummary>, StoreError> {
    let runs = root().await?;
    let entries = runs.values();
    let mut out = Vec::new();
    loop {
        let next = wait(entries.next().map_err(to_store_error)?).await.map_err(to_store_error)?;
        if js_sys::Reflect::get(&next, &"done".into()).map(|d| d.is_truthy()).unwrap_or(true) {
            break;
        }
        let value = js_sys::Reflect::get(&next, &"value".into()).map_err(to_store_error)?;
        let Ok(dir) = value.dyn_into::<web_sys::FileSystemDirectoryHandle>() else { continue };
        if let Some(m) = read_manifest(&dir).await? {
            out.push(m.summary());
        }
    }
    out.sort_by(|a, b| b.saved_unix_ms.total_cmp(&a.saved_unix_ms));
    Ok(out)
}

/// The most recently saved run, for the "resume?" offer after a reload.
pub async fn latest() -> Result<Option<RunSummary>, StoreError> {
    Ok(list().await?.into_iter().next())
}

/// Remove run `id` and all its files; removing a run that is not there succeeds.
pub async fn delete(id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Ok(());
    }
    remove(&root().await?, &dir_name(id), true).await.map_err(to_store_error)
}

/// `navigator.storage.estimate()`: `(usage, quota)` in bytes, where the browser tells.
pub async fn estimate() -> Option<(f64, f64)> {
    let navigator = web_sys::window()?.navigator();
    let storage = js_sys::Reflect::get(&navigator, &"storage".into()).ok().filter(|s| !s.is_undefined())?;
    let storage: web_sys::StorageManager = storage.unchecked_into();
    let est: web_sys::StorageEstimate = wait(storage.estimate().ok()?).await.ok()?.unchecked_into();
    Some((est.get_usage()?, est.get_quota()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(checkpoint: Vec<u8>) -> SavedRun {
        SavedRun {
            id: "r".into(),
            config_json: "{\"lr\":0.001}".into(),
            curves_json: "[1.5,1.25]".into(),
            checkpoint,
            step: 200,
            saved_unix_ms: 0.0,
        }
    }

    fn encoded(r: &SavedRun) -> Vec<u8> {
        [&slot_header(r)[..], r.config_json.as_bytes(), r.curves_json.as_bytes(), &r.checkpoint].concat()
    }

    #[test]
    fn slot_file_round_trips() {
        let r = run((0..=255).collect());
        let (step, config, curves, checkpoint) = decode_slot(&encoded(&r)).unwrap();
        assert_eq!((step, config, curves, checkpoint), (r.step, r.config_json, r.curves_json, r.checkpoint));
    }

    #[test]
    fn truncated_slot_file_is_refused() {
        let bytes = encoded(&run(vec![7; 100]));
        let err = decode_slot(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("cut short"), "{err}");
        assert!(decode_slot(&bytes[..10]).is_err());
    }

    #[test]
    fn run_ids_become_distinct_safe_file_names() {
        assert_eq!(dir_name("run-1_a"), "run-1_a");
        assert_eq!(dir_name(".."), "~2E~2E");
        assert_eq!(dir_name("a/b"), "a~2Fb");
        assert_ne!(dir_name("a~2F"), dir_name("a/"));
    }

    #[test]
    fn quota_message_names_the_kept_step() {
        let m = Manifest { id: "r".into(), slot: "a".into(), step: 200, saved_unix_ms: 0.0, bytes: 0 };
        assert_eq!(
            quota_error(Some(&m)).to_string(),
            "browser storage is full (quota exceeded): the last checkpoint at step 200 is kept"
        );
    }
}
