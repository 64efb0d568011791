//! The Attention page, served from the release build, in headless Chromium: the bundled
//! Fashion-MNIST DINO model on the default image gives a tile per head, the mean and the mask, with
//! heat maps that are not flat; another layer repaints; twice the resolution gives a 14×14
//! grid and back; a click on a patch shows what it
//! attends to; a file that is not a model gets a message while the tiles stay. The CPU
//! backend is forced (`?backend=cpu`), as in the Reconstruct test.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use patchwork_e2e::{chrome_options, serve::serve, webdriver::Browser, workspace};
use serde_json::json;

/// Heads of `assets/models/dino-fashion-mnist.safetensors`, the page's first model (its card: width 128, 4 blocks).
const HEADS: usize = 4;
const LAYERS: usize = 4;

/// Wait until the tiles are done for a label holding `image`; returns the tile counts
/// `(input, heads, mean, mask)`.
fn finished_tiles(browser: &Browser, image: &str) -> (u64, u64, u64, u64) {
    let start = Instant::now();
    loop {
        let v = browser
            .execute(
                "const tiles = document.querySelector('[data-testid=attention-tiles]');
                 const n = id => document.querySelectorAll(`[data-testid=${id}] canvas`).length;
                 return { done: tiles ? tiles.dataset.doneFor : '',
                          counts: [n('tile-input'), n('tile-head'), n('tile-mean'), n('tile-mask')] };",
                json!([]),
            )
            .unwrap();
        if v["done"].as_str().is_some_and(|d| d.contains(image)) {
            return serde_json::from_value(v["counts"].clone()).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(180), "tiles not finished for {image}: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Per canvas matching `selector`: (the spread of its red channel, a checksum of its pixels).
fn canvases(browser: &Browser, selector: &str) -> Vec<(i64, i64)> {
    let v = browser
        .execute(
            "return [...document.querySelectorAll(arguments[0])].map(c => {
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 let lo = 255, hi = 0, sum = 0;
                 for (let i = 0; i < d.length; i += 4) {
                     lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]);
                     sum = (sum * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1000000007;
                 }
                 return [hi - lo, sum];
             });",
            json!([selector]),
        )
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// A click at `(fx, fy)` (fractions of its size) on the first canvas matching `selector`.
fn click(browser: &Browser, selector: &str, fx: f64, fy: f64) {
    browser
        .execute(
            "const c = document.querySelector(arguments[0]);
             const r = c.getBoundingClientRect();
             c.dispatchEvent(new MouseEvent('click', { bubbles: true,
                 clientX: r.left + arguments[1] * r.width, clientY: r.top + arguments[2] * r.height }));",
            json!([selector, fx, fy]),
        )
        .unwrap();
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn attention_page_shows_heads_mean_mask_and_a_clicked_patch_and_refuses_non_models() {
    let dist = std::env::var_os("PATCHWORK_E2E_DIST").map(PathBuf::from).unwrap_or_else(|| workspace().join("dist"));
    assert!(dist.join("index.html").is_file(), "no release build in {}", dist.display());
    let chromedriver = std::env::var_os("CHROMEDRIVER").map(PathBuf::from).unwrap_or("/usr/bin/chromedriver".into());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let profile = out.join(format!("chromium-profile-attention-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();

    let url = serve(&dist).expect("static server");
    let (binary, args) = chrome_options();
    let browser = Browser::start(&chromedriver, binary.as_deref(), &args, &profile).unwrap();
    browser.goto(&format!("{url}/?page=attention&backend=cpu")).unwrap();

    // The default image through the bundled MAE's encoder: input, a tile per head, mean, mask.
    let counts = finished_tiles(&browser, "Fashion-MNIST test 0");
    assert_eq!(counts, (1, HEADS as u64, 1, 1), "(input, heads, mean, mask) tiles");
    let status = browser.text("[data-testid=model-status]").unwrap().unwrap_or_default();
    println!("model: {status}");
    assert!(status.contains("dino-fashion-mnist") && status.contains("4 heads") && status.contains("CPU"), "{status}");
    let layer =
        browser.execute("return document.querySelector('[data-testid=attention-tiles]').dataset.layer;", json!([]));
    assert_eq!(layer.unwrap(), json!((LAYERS - 1).to_string()), "the last layer by default");

    // Heat maps are not flat, and the heads differ from one another.
    let heads = canvases(&browser, "[data-testid=tile-head] canvas");
    let mean = canvases(&browser, "[data-testid=tile-mean] canvas");
    println!("heads (spread, checksum): {heads:?}; mean: {mean:?}");
    assert!(heads.iter().chain(&mean).all(|(spread, _)| *spread > 40), "a flat heat map: {heads:?} {mean:?}");
    assert!(heads.windows(2).any(|w| w[0].1 != w[1].1), "every head drew the same picture");
    let mask = browser.text("[data-testid=tile-mask]").unwrap().unwrap_or_default();
    assert!(mask.contains("60%-mass mask of the mean"), "{mask}");

    // Another layer repaints without a new forward.
    browser
        .execute(
            "const s = document.querySelector('[data-testid=layer-select]');
             s.value = '0'; s.dispatchEvent(new Event('change', { bubbles: true }));",
            json!([]),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let layer0 = canvases(&browser, "[data-testid=tile-mean] canvas");
    assert_ne!(layer0[0].1, mean[0].1, "layer 0's mean map looks like the last layer's");
    // the layer is in the address, so a reload or a shared link shows it
    let search = browser.execute("return location.search;", json!([])).unwrap();
    assert!(search.as_str().unwrap_or_default().contains("layer=0"), "{search}");
    browser
        .execute(
            "const s = document.querySelector('[data-testid=layer-select]');
             s.value = arguments[0]; s.dispatchEvent(new Event('change', { bubbles: true }));",
            json!([(LAYERS - 1).to_string()]),
        )
        .unwrap();

    // Twice the resolution: the same image on a 14×14 grid (interpolated position embeddings),
    // every tile again; then back to the model's own 7×7.
    let set_resolution = |f: &str, grid: &str| {
        browser
            .execute(
                "const s = document.querySelector('[data-testid=resolution-select]');
                 s.value = arguments[0]; s.dispatchEvent(new Event('change', { bubbles: true }));",
                json!([f]),
            )
            .unwrap();
        let start = Instant::now();
        while browser
            .execute("return document.querySelector('[data-testid=attention-tiles]').dataset.grid;", json!([]))
            .unwrap()
            != json!(grid)
        {
            assert!(start.elapsed() < Duration::from_secs(120), "no {grid} grid after resolution ×{f}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let options = browser.text("[data-testid=resolution-select]").unwrap().unwrap_or_default();
    assert!(options.contains("28×28 px (trained)") && options.contains("56×56 px (×2)"), "{options}");
    set_resolution("2", "14×14");
    // kept in the address with the layer, for a reload or a shared link
    let search = browser.execute("return location.search;", json!([])).unwrap();
    assert!(search.as_str().unwrap_or_default().contains("res=2"), "{search}");
    assert_eq!(finished_tiles(&browser, "Fashion-MNIST test 0"), counts);
    let mask = browser.text("[data-testid=tile-mask]").unwrap().unwrap_or_default();
    assert!(mask.contains("/196 patches (14×14 grid)"), "{mask}");
    let fine = canvases(&browser, "[data-testid=tile-head] canvas");
    assert!(fine.iter().all(|(spread, _)| *spread > 40), "a flat heat map at 56 px: {fine:?}");
    browser.execute("document.querySelector('[data-testid=resolution-select]').scrollIntoView();", json!([])).unwrap();
    browser.screenshot(&out.join("attention-x2.png")).unwrap();
    set_resolution("1", "7×7");
    assert_eq!(canvases(&browser, "[data-testid=tile-head] canvas"), heads, "back at 28 px, the maps are as before");

    // A click on the mean tile's centre patch (row 3, column 3 of 7×7) shows its attention.
    click(&browser, "[data-testid=tile-mean] canvas", 0.5, 0.5);
    let label = browser
        .wait_text("[data-testid=patch-label]", Duration::from_secs(30), |t| !t.is_empty())
        .unwrap_or_else(|e| panic!("{e}"));
    println!("patch view: {label}");
    assert!(label.contains("row 3, column 3") && label.contains("layer 3"), "{label}");
    let rows = canvases(&browser, "[data-testid=patch-view] [data-testid=patch-tile-head] canvas");
    assert_eq!(rows.len(), HEADS);
    assert!(rows.iter().all(|(spread, _)| *spread > 40), "a flat patch map: {rows:?}");
    assert_eq!(canvases(&browser, "[data-testid=patch-tile-mean] canvas").len(), 1);

    // the controls, the tiles and the patch view in one screen
    browser.execute("document.querySelector('[data-testid=image-name]').scrollIntoView();", json!([])).unwrap();
    let shot = out.join("attention.png");
    browser.screenshot(&shot).unwrap();
    println!("screenshot: {}", shot.display());

    // Not a model: a message, and the tiles stay.
    let fake = out.join("notes.safetensors");
    std::fs::write(&fake, "these are notes, not tensors").unwrap();
    browser.upload_file("[data-testid=model-file]", &fake).unwrap();
    let status = browser
        .wait_text("[data-testid=model-status]", Duration::from_secs(30), |t| t.contains("notes.safetensors"))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("bad model: {status}");
    assert!(status.contains("Model not loaded") && status.contains("not a safetensors model"), "{status}");
    assert_eq!(finished_tiles(&browser, "Fashion-MNIST test 0"), counts, "the tiles went away after a bad model");
    browser.execute("window.scrollTo(0, 0);", json!([])).unwrap();
    browser.screenshot(&out.join("attention-bad-model.png")).unwrap();
    drop(browser);
    let _ = std::fs::remove_file(&fake);
    let _ = std::fs::remove_dir_all(&profile);
}

/// A ViT-S/16 with the official DINO checkpoint's names and shapes (`dino_deitsmall16_pretrain.pth`:
/// 224 px, width 384 × 12 blocks, no head, 22 M parameters), saved as the README's conversion
/// saves it (f32, no metadata), loads from disk through "Load a checkpoint…": its config is
/// read off the shapes with 6 heads (384 / 64) and a photo gives 6 head tiles on a 14×14 grid.
/// The weights are random (no official file can be downloaded here), so only loading and
/// running are checked, not what the heads look at.
#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn an_official_dino_vit_s16_checkpoint_loads_from_disk_and_shows_six_heads() {
    use patchwork_compute::{block_on, Cpu, Vit, VitConfig};

    let dist = std::env::var_os("PATCHWORK_E2E_DIST").map(PathBuf::from).unwrap_or_else(|| workspace().join("dist"));
    assert!(dist.join("index.html").is_file(), "no release build in {}", dist.display());
    let chromedriver = std::env::var_os("CHROMEDRIVER").map(PathBuf::from).unwrap_or("/usr/bin/chromedriver".into());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    std::fs::create_dir_all(&out).unwrap();

    let ckpt = out.join("dino_vits16.safetensors");
    {
        let cfg = VitConfig { embed_dim: 384, num_heads: 6, num_classes: 0, ..VitConfig::default() };
        let file = block_on(Vit::init(&Cpu, cfg, 0).params.download(&Cpu, ""));
        assert!(file.metadata.is_empty() && file.tensors.contains_key("blocks.11.attn.qkv.weight"));
        file.save(&ckpt).unwrap();
    }

    let profile = out.join(format!("chromium-profile-dino-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let url = serve(&dist).expect("static server");
    let (binary, args) = chrome_options();
    let browser = Browser::start(&chromedriver, binary.as_deref(), &args, &profile).unwrap();
    browser.goto(&format!("{url}/?page=attention&backend=cpu")).unwrap();
    finished_tiles(&browser, "Fashion-MNIST test 0");
    browser.upload_file("[data-testid=file-input]", &workspace().join("assets/photos/heldout/chelsea.jpg")).unwrap();
    finished_tiles(&browser, "chelsea.jpg");

    let t = Instant::now();
    browser.upload_file("[data-testid=model-file]", &ckpt).unwrap();
    let status = browser
        .wait_text("[data-testid=model-status]", Duration::from_secs(120), |t| t.contains("dino_vits16"))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("model: {status}");
    assert!(status.contains("ViT 224×224 RGB") && status.contains("(14×14)") && status.contains("6 heads"), "{status}");
    assert!(status.contains("inferred from the tensor shapes"), "{status}");
    let counts = finished_tiles(&browser, "dino_vits16");
    println!("attention in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(counts, (1, 6, 1, 1), "(input, heads, mean, mask) tiles");
    let heads = canvases(&browser, "[data-testid=tile-head] canvas");
    assert!(heads.iter().all(|(spread, _)| *spread > 40), "a flat heat map: {heads:?}");
    let size = browser.execute("return document.querySelector('[data-testid=tile-mean] canvas').width;", json!([]));
    assert_eq!(size.unwrap(), json!(224), "a 224 px input is drawn at its own size");
    browser.execute("document.querySelector('[data-testid=image-name]').scrollIntoView();", json!([])).unwrap();
    browser.screenshot(&out.join("attention-vit-s16.png")).unwrap();
    drop(browser);
    let _ = std::fs::remove_file(&ckpt);
    let _ = std::fs::remove_dir_all(&profile);
}
