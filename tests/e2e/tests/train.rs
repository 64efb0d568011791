//! The Train page, served from the release build, in headless Chromium: a short DINO run on
//! the micro preset (CPU backend, as the other page tests force it) draws its loss curve and
//! held-out kNN / linear-probe points; it is stopped after its first checkpoint, the page is
//! reloaded, it offers the saved run, resumes it with the curve intact, and the curve
//! continues to the end of the schedule.
use std::path::Path;
use std::time::{Duration, Instant};

use patchwork_e2e::{webdriver::Browser, Page};
use serde_json::{json, Value};

/// What the page shows: `(state, loss points, accuracy points, progress step, status text)`.
fn state(browser: &Browser) -> (String, u64, u64, u64, String) {
    let v = browser
        .execute(
            "const q = s => document.querySelector(`[data-testid=${s}]`);
             const pts = s => q(s) ? Number(q(s).dataset.points) : 0;
             return [q('train-status')?.dataset.state ?? '', pts('chart-loss'), pts('chart-accuracy'),
                     Number(q('train-progress')?.dataset.step ?? 0), q('train-status')?.textContent ?? ''];",
            json!([]),
        )
        .unwrap();
    serde_json::from_value(v).unwrap()
}

fn wait_for(browser: &Browser, what: &str, secs: u64, done: impl Fn(&(String, u64, u64, u64, String)) -> bool) {
    let start = Instant::now();
    loop {
        let s = state(browser);
        if done(&s) {
            println!("{what}: {s:?} after {:.1} s", start.elapsed().as_secs_f64());
            return;
        }
        assert!(s.0 != "failed", "{what}: the run failed: {}", s.4);
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}: still {s:?} after {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn set_input(browser: &Browser, testid: &str, value: &str) {
    browser
        .execute(
            "const el = document.querySelector(`[data-testid=${arguments[0]}]`);
             el.value = arguments[1]; el.dispatchEvent(new Event('change', { bubbles: true }));",
            json!([testid, value]),
        )
        .unwrap();
}

fn click(browser: &Browser, testid: &str) {
    let v: Value = browser
        .execute(
            "const el = document.querySelector(`[data-testid=${arguments[0]}]`);
             if (!el || el.disabled) return false; el.click(); return true;",
            json!([testid]),
        )
        .unwrap();
    assert_eq!(v, json!(true), "{testid} is missing or disabled");
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn a_dino_run_trains_survives_a_reload_and_resumes_with_its_curves() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let browser = Page::open(&out, "train", "page=train&backend=cpu");
    let url = browser.url.clone();
    browser.wait_text("[data-testid=train-status]", Duration::from_secs(60), |t| t.contains("Not started")).unwrap();

    // DINO and the micro preset are the defaults; an evaluation and a checkpoint every 20
    // steps.
    const STEPS: u64 = 200;
    for (id, v) in
        [("train-steps", "200"), ("train-batch", "16"), ("train-eval-every", "20"), ("train-ckpt-every", "20")]
    {
        set_input(&browser, id, v);
    }
    click(&browser, "train-start");
    // A checkpoint saved and kNN + linear points drawn, then stop.
    wait_for(&browser, "first evaluation", 240, |s| s.2 >= 2 && s.1 >= 20);
    browser
        .wait_text("[data-testid=train-progress]", Duration::from_secs(120), |t| t.contains("last checkpoint: step"))
        .unwrap();
    click(&browser, "train-stop");
    wait_for(&browser, "stopped", 60, |s| s.0 == "stopped");
    let (_, loss_before, acc_before, step_before, text) = state(&browser);
    println!("stopped: {text}");
    let progress = browser.text("[data-testid=train-progress]").unwrap().unwrap_or_default();
    let ckpt: u64 = progress.rsplit("last checkpoint: step ").next().unwrap().trim().parse().unwrap();
    assert!(
        ckpt >= 20 && ckpt.is_multiple_of(20) && ckpt <= step_before,
        "checkpoint {ckpt}, stopped at {step_before}"
    );
    let knn = browser.text("[data-testid=chart-accuracy] figcaption").unwrap().unwrap_or_default();
    println!("accuracy caption: {knn}");
    assert!(knn.contains("kNN") && knn.contains("linear probe"), "no kNN / probe points: {knn}");

    // Reload: the saved run is offered, and resuming restores its curves before going on.
    browser.goto(&url).unwrap();
    let offer =
        browser.wait_text("[data-testid=resume-offer]", Duration::from_secs(60), |t| t.contains("step")).unwrap();
    println!("offer: {offer}");
    assert!(offer.contains("DINO") && offer.contains(&format!("step {ckpt} of {STEPS}")), "offer: {offer}");
    assert_eq!(state(&browser).1, 0, "a fresh page draws no curve before resuming");
    click(&browser, "resume-button");
    wait_for(&browser, "curves restored", 60, |s| s.1 >= ckpt);
    wait_for(&browser, "finished", 600, |s| s.0 == "finished");
    let (_, loss_after, acc_after, step_after, text) = state(&browser);
    println!("finished: {text}");
    assert_eq!(step_after, STEPS);
    // The curve continued from the checkpoint: steps 1..=ckpt from before the reload (the
    // steps after it were not saved), the rest after.
    assert!(loss_before >= ckpt, "loss points before the reload: {loss_before}");
    assert_eq!(loss_after, STEPS, "loss points after resuming");
    assert_eq!(acc_after, 2 * STEPS / 20, "kNN + probe points (before the reload: {acc_before})");
    let loss_steps: Vec<f64> = serde_json::from_value(
        browser
            .execute(
                "return document.querySelector('[data-testid=chart-loss] figcaption').textContent.match(/at step ([0-9.]+)/).slice(1).map(Number);",
                json!([]),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(loss_steps, vec![STEPS as f64]);

    browser.screenshot("train.png");
}

/// Run MAE with the `form` settings to the end; its reconstructions must be from the last
/// step. Returns the grid canvas's size.
fn mae_run(browser: &Browser, form: &[(&str, &str)]) -> (u64, u64) {
    set_input(browser, "train-method", "mae");
    for (id, v) in form {
        set_input(browser, id, v);
    }
    click(browser, "train-start");
    wait_for(browser, "finished", 300, |s| s.0 == "finished");
    let steps = form.iter().find(|(id, _)| *id == "train-steps").map_or("200", |(_, v)| *v);
    let caption = browser.text("[data-testid=train-recon] figcaption").unwrap().unwrap_or_default();
    println!("{caption}");
    assert!(
        caption.starts_with(&format!("Step {steps}:")),
        "reconstructions not refreshed at the last step: {caption}"
    );
    let size = browser
        .execute(
            "const c = document.querySelector('[data-testid=train-recon-grid]'); c.scrollIntoView();
             return [c.width, c.height];",
            json!([]),
        )
        .unwrap();
    serde_json::from_value(size).unwrap()
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn an_mae_run_shows_its_reconstructions_refreshing() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let browser = Page::open(&out, "train-mae", "page=train&backend=cpu");
    browser.wait_text("[data-testid=train-status]", Duration::from_secs(60), |t| t.contains("Not started")).unwrap();
    let (w, h) = mae_run(&browser, &[("train-steps", "60"), ("train-eval-every", "20"), ("train-ckpt-every", "60")]);
    assert!(w >= 4 * 28 && h >= 4 * 28, "grid {w}×{h}");
    browser.screenshot("train-mae.png");
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn mae_and_dino_train_on_the_bundled_photos() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let browser = Page::open(&out, "train-photos", "page=train&backend=cpu");
    browser.wait_text("[data-testid=train-status]", Duration::from_secs(60), |t| t.contains("Not started")).unwrap();
    set_input(&browser, "train-data", "photos");
    let preset = browser
        .execute(
            "const s = document.querySelector('[data-testid=train-preset]'); return s.options[s.selectedIndex].text;",
            json!([]),
        )
        .unwrap();
    assert_eq!(preset, json!("micro (ViT 32×1, 32 px colour, patch 8)"));
    let form = [("train-steps", "40"), ("train-batch", "16"), ("train-eval-every", "20"), ("train-ckpt-every", "40")];
    let (w, h) = mae_run(&browser, &form);
    let st = state(&browser);
    assert_eq!((st.1, st.2), (40, 0), "40 loss points and no accuracy points (the photos have no labels)");
    // the two held-out photos, in colour: a row each
    assert!(w > h && h >= 2 * 32, "grid {w}×{h}");
    browser.screenshot("train-photos-mae.png");
    set_input(&browser, "train-method", "dino");
    set_input(&browser, "train-steps", "10");
    set_input(&browser, "train-ckpt-every", "10");
    set_input(&browser, "train-eval-every", "10");
    click(&browser, "train-start");
    wait_for(&browser, "finished", 300, |s| s.0 == "finished");
    assert_eq!(state(&browser).1, 10);
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn fine_tuning_the_bundled_dino_model_ends_with_a_confusion_matrix() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let browser = Page::open(&out, "train-ft", "page=train&backend=cpu");
    browser.wait_text("[data-testid=train-status]", Duration::from_secs(60), |t| t.contains("Not started")).unwrap();
    set_input(&browser, "train-method", "supervised");
    // The bundled model list arrives asynchronously.
    let start = Instant::now();
    while browser
        .execute("return !!document.querySelector('[data-testid=train-fine-tune] option[value=\"dino-fashion-mnist.safetensors\"]');", json!([]))
        .unwrap()
        != json!(true)
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no bundled DINO model to fine-tune");
        std::thread::sleep(Duration::from_millis(100));
    }
    set_input(&browser, "train-fine-tune", "dino-fashion-mnist.safetensors");
    for (id, v) in [("train-steps", "40"), ("train-eval-every", "40"), ("train-ckpt-every", "40")] {
        set_input(&browser, id, v);
    }
    click(&browser, "train-start");
    wait_for(&browser, "finished", 600, |s| s.0 == "finished");
    let caption = browser.text("[data-testid=train-confusion] figcaption").unwrap().unwrap_or_default();
    println!("{caption}");
    assert!(caption.starts_with("Confusion matrix at step 40"), "{caption}");
    let acc: f64 = caption.split('(').nth(1).unwrap().split('%').next().unwrap().parse().unwrap();
    // From the DINO backbone (kNN 64.8% on this subset) 40 steps of fine-tuning are far above chance.
    assert!(acc > 40.0, "fine-tuned accuracy {acc}%");
    browser.execute("document.querySelector('[data-testid=train-confusion]').scrollIntoView();", json!([])).unwrap();
    browser.screenshot("train-fine-tune.png");
}

/// A 24-bit BMP (which every browser decodes) of `w`×`h` grey values.
fn bmp(w: u32, h: u32, grey: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let row = (3 * w).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut b = Vec::with_capacity(size as usize);
    b.extend(b"BM");
    b.extend(size.to_le_bytes());
    b.extend([0u8; 4]);
    b.extend(54u32.to_le_bytes());
    b.extend(40u32.to_le_bytes());
    b.extend((w as i32).to_le_bytes());
    b.extend((h as i32).to_le_bytes());
    b.extend(1u16.to_le_bytes());
    b.extend(24u16.to_le_bytes());
    b.extend([0u8; 24]);
    for y in (0..h).rev() {
        for x in 0..w {
            let v = grey(x, y);
            b.extend([v, v, v]);
        }
        b.extend(vec![0u8; (row - 3 * w) as usize]);
    }
    b
}

/// `OUT/folder-PID-TAG/shapes/bar/*.bmp` (a vertical bar) and `shapes/ring/*.bmp` (a ring),
/// 20 each, plus a file that is no image: the `shapes` folder.
fn shapes_folder(out: &Path, tag: &str) -> std::path::PathBuf {
    let root = out.join(format!("folder-{}-{tag}", std::process::id())).join("shapes");
    for class in ["bar", "ring"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
    }
    for i in 0..20u32 {
        let shift = i % 5;
        let bar = bmp(32, 32, |x, _| if (12 + shift..18 + shift).contains(&x) { 240 } else { 20 });
        let ring = bmp(32, 32, |x, y| {
            let (dx, dy) = (x as f32 - 16.0 - shift as f32 / 2.0, y as f32 - 16.0);
            if (7.0..11.0).contains(&(dx * dx + dy * dy).sqrt()) {
                240
            } else {
                20
            }
        });
        std::fs::write(root.join(format!("bar/{i}.bmp")), bar).unwrap();
        std::fs::write(root.join(format!("ring/{i}.bmp")), ring).unwrap();
    }
    std::fs::write(root.join("ring/notes.txt"), "not an image").unwrap();
    root
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn a_picked_folder_of_class_subfolders_trains_a_swin_classifier() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let root = shapes_folder(&out, "picked");
    let browser = Page::open(&out, "train-folder", "page=train&backend=cpu");
    browser.wait_text("[data-testid=train-status]", Duration::from_secs(60), |t| t.contains("Not started")).unwrap();
    let swin_disabled = "return document.querySelector('[data-testid=train-backbone] option[value=swin]').disabled;";
    assert_eq!(browser.execute(swin_disabled, json!([])).unwrap(), json!(true), "DINO (the default) trains a ViT");
    set_input(&browser, "train-method", "supervised");
    assert_eq!(browser.execute(swin_disabled, json!([])).unwrap(), json!(false));
    set_input(&browser, "train-backbone", "swin");
    let preset = browser
        .execute(
            "const s = document.querySelector('[data-testid=train-preset]'); return s.options[s.selectedIndex].text;",
            json!([]),
        )
        .unwrap();
    assert!(preset.as_str().unwrap_or_default().contains("Swin 16→32, 1+1 blocks"), "{preset}");
    set_input(&browser, "train-data", "folder");
    browser.upload_file("[data-testid=train-folder]", &root).unwrap();
    let note = browser
        .wait_text("[data-testid=train-folder-note]", Duration::from_secs(60), |t| t.contains("held out"))
        .unwrap();
    println!("{note}");
    assert!(
        note.contains("40 images") && note.contains("2 classes (bar, ring)") && note.contains("1 file(s) skipped"),
        "{note}"
    );
    for (id, v) in [("train-steps", "30"), ("train-batch", "8"), ("train-eval-every", "30"), ("train-ckpt-every", "30")]
    {
        set_input(&browser, id, v);
    }
    click(&browser, "train-start");
    wait_for(&browser, "finished", 300, |s| s.0 == "finished");
    let caption = browser.text("[data-testid=train-confusion] figcaption").unwrap().unwrap_or_default();
    println!("{caption}");
    assert!(caption.contains("of 8 held-out images right"), "{caption}");
    let header = browser.text("[data-testid=train-confusion] table").unwrap().unwrap_or_default();
    assert!(header.contains("bar") && header.contains("ring"), "{header}");
    browser.screenshot("train-folder.png");
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}

#[test]
#[ignore = "needs a release build and chromedriver: run scripts/test"]
fn a_folder_dropped_on_the_settings_is_read_like_a_picked_one() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("e2e");
    let root = shapes_folder(&out, "dropped");
    let browser = Page::open(&out, "train-drop", "page=train&backend=cpu");
    browser.wait_text("[data-testid=train-status]", Duration::from_secs(60), |t| t.contains("Not started")).unwrap();
    // the whole folder: its subfolders are the classes
    browser.drop_paths("[data-testid=train-form]", &[&root]).unwrap();
    let note = browser
        .wait_text("[data-testid=train-folder-note]", Duration::from_secs(60), |t| t.contains("held out"))
        .unwrap();
    println!("{note}");
    assert!(note.starts_with("“shapes”: 40 images"), "{note}");
    assert!(note.contains("2 classes (bar, ring)") && note.contains("1 file(s) skipped"), "{note}");
    let data = browser.execute("return document.querySelector('[data-testid=train-data]').value;", json!([])).unwrap();
    assert_eq!(data, json!("folder"));
    // two class folders dropped together: still two classes
    browser.drop_paths("[data-testid=train-form]", &[&root.join("bar"), &root.join("ring")]).unwrap();
    let note = browser
        .wait_text("[data-testid=train-folder-note]", Duration::from_secs(60), |t| t.starts_with("“dropped items”"))
        .unwrap();
    println!("{note}");
    assert!(note.contains("40 images") && note.contains("2 classes (bar, ring)"), "{note}");
    browser.screenshot("train-drop.png");
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}
