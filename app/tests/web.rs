//! Browser tests, run by wasm-bindgen-test in headless Chromium with WebGPU on
//! (`scripts/test`; Chromium's flags come from `webdriver.json`).
#![cfg(target_arch = "wasm32")]

use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast;
use patchwork_app::device_panel::DevicePanel;
use patchwork_app::probe::{self, Device, GpuInfo, KernelCheck, Report};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn require_gpu() -> bool {
    option_env!("PATCHWORK_REQUIRE_GPU") == Some("1")
}

#[wasm_bindgen_test]
async fn self_check_kernel_runs_on_the_browsers_webgpu_adapter() {
    let (adapter, device, queue) = match probe::gpu().await {
        Ok(gpu) => gpu,
        Err(e) if !require_gpu() => {
            console_log!("skipped: {e}");
            return;
        }
        Err(e) => panic!("PATCHWORK_REQUIRE_GPU=1 but {e}"),
    };
    let info = probe::describe(&adapter);
    console_log!("adapter: {info:?}");
    assert_eq!(info.backend, "webgpu");
    let check = probe::self_check(&device, &queue).await.unwrap();
    assert_eq!(check.first_mismatch, None, "y = 2x + 1 wrong on the GPU");
    assert_eq!(check.head, [1.0, 3.0, 5.0, 7.0]);
    assert_eq!(check.workgroups, 2);
}

/// Mount `f` in a fresh element of the page and return that element.
fn mount<N: IntoView + 'static>(f: impl FnOnce() -> N + 'static) -> web_sys::HtmlElement {
    let document = document();
    let host: web_sys::HtmlElement = document.create_element("div").unwrap().unchecked_into();
    document.body().unwrap().append_child(&host).unwrap();
    leptos::mount::mount_to(host.clone(), f).forget();
    host
}

fn testid(host: &web_sys::HtmlElement, id: &str) -> String {
    host.query_selector(&format!("[data-testid={id}]"))
        .unwrap()
        .unwrap_or_else(|| panic!("no [data-testid={id}] in {}", host.inner_html()))
        .text_content()
        .unwrap_or_default()
}

#[wasm_bindgen_test]
fn device_panel_shows_adapter_limits_and_kernel_result() {
    let report = Report {
        device: Device::Gpu(GpuInfo {
            name: "Test Adapter".into(),
            vendor: "acme".into(),
            architecture: "rdna9".into(),
            backend: "webgpu".into(),
            fallback: true,
            limits: vec![probe::Limit { name: "maxBufferSize", value: 256 << 20, bytes: true }],
            features: vec!["shader-f16".into()],
        }),
        kernel: Some(Ok(KernelCheck {
            n: 100,
            workgroups: 2,
            head: vec![1.0, 3.0, 5.0, 7.0],
            first_mismatch: None,
            millis: 1.0,
        })),
    };
    let host = mount(move || view! { <DevicePanel report /> });
    assert_eq!(testid(&host, "adapter-name"), "Test Adapter (acme rdna9)");
    assert!(testid(&host, "device-summary").contains("webgpu"));
    assert!(testid(&host, "device-fallback").contains("CPU backend"));
    assert!(testid(&host, "device-limits").contains("maxBufferSize256 MiB (268435456)"));
    assert!(testid(&host, "device-features").contains("shader-f16"));
    assert!(testid(&host, "kernel-check").starts_with("kernel check: ok"));
}

#[wasm_bindgen_test]
fn device_panel_says_cpu_backend_without_webgpu() {
    let report = Report { device: Device::Cpu { reason: "no WebGPU adapter".into() }, kernel: None };
    let host = mount(move || view! { <DevicePanel report /> });
    assert_eq!(testid(&host, "device-summary"), "No WebGPU: work runs on the CPU backend.");
    assert!(host.query_selector("[data-testid=kernel-check]").unwrap().is_none());
}

mod reconstruct {
    use super::*;
    use patchwork_app::app::auto_backend;
    use patchwork_app::browser::decode_image;
    use patchwork_app::engine::{BackendKind, Engine, Row};
    use patchwork_app::reconstruct::page::ReconGrid;
    use patchwork_app::reconstruct::{model_input, parse_model, Recon};
    use patchwork_compute::methods::mae::MaeConfig;
    use std::rc::Rc;

    const MODEL: &[u8] = include_bytes!("../../assets/models/mae-fashion-mnist.safetensors");
    const TEST_0: &[u8] = include_bytes!("../../assets/models/fashion-mnist-test-0.png");

    fn blob(bytes: &[u8], mime: &str) -> web_sys::Blob {
        let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
        let opts = web_sys::BlobPropertyBag::new();
        opts.set_type(mime);
        web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts).unwrap()
    }

    fn row(ratio: f64) -> Row {
        let cfg = MaeConfig { img_size: 4, patch_size: 2, in_chans: 1, ..MaeConfig::default() };
        let recon = Recon {
            mask: vec![1.0, 0.0, 0.0, 1.0],
            pred: vec![0.25; 16],
            orig: (0..16).map(|i| i as f32 / 15.0).collect(),
        };
        Row { cfg, ratio, masked_patches: 2, recon, mse: 0.01, mse_mean_fill: 0.1 }
    }

    #[wasm_bindgen_test]
    fn the_models_list_gives_names_and_methods() {
        let list = "dino-fashion-mnist.safetensors dino\nmae-photos.safetensors mae\nold.safetensors\nREADME.md\n\n";
        let got = patchwork_app::browser::parse_models_list(list);
        let want =
            [("dino-fashion-mnist.safetensors", "dino"), ("mae-photos.safetensors", "mae"), ("old.safetensors", "")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[wasm_bindgen_test]
    fn grid_has_one_row_per_ratio_with_four_canvases() {
        let rows = RwSignal::new(vec![row(0.25), row(0.5), row(0.75)]);
        let host = mount(move || view! { <ReconGrid rows done_for="test".to_string() /> });
        assert_eq!(host.query_selector_all("[data-testid=recon-row]").unwrap().length(), 3);
        assert_eq!(host.query_selector_all("[data-testid=recon-row] canvas").unwrap().length(), 12);
        assert!(testid(&host, "row-errors").contains("model 0.0100 · mean fill 0.1000 (0.10×)"));
    }

    #[wasm_bindgen_test]
    async fn empty_and_non_image_files_are_refused_with_a_message() {
        let e = decode_image(&blob(b"", "image/png"), "empty.png").await.unwrap_err();
        assert!(e.contains("is empty (0 bytes)"), "{e}");
        let e = decode_image(&blob(b"hello, I am text", "image/png"), "notes.png").await.unwrap_err();
        assert!(e.contains("not an image"), "{e}");
        let e = decode_image(&blob(&TEST_0[..TEST_0.len() / 2], "image/png"), "cut.png").await.unwrap_err();
        assert!(e.contains("not an image"), "{e}");
    }

    /// A blob the browser encodes from a drawn canvas (`type` e.g. "image/jpeg").
    async fn canvas_blob(width: u32, height: u32, mime: &str, draw: &str) -> web_sys::Blob {
        let js = format!(
            "(async () => {{ const c = document.createElement('canvas'); c.width = {width}; c.height = {height};
               const g = c.getContext('2d'); {draw}
               return await new Promise(r => c.toBlob(r, '{mime}', 0.9)); }})()"
        );
        let promise: js_sys::Promise = js_sys::eval(&js).unwrap().unchecked_into();
        wasm_bindgen_futures::JsFuture::from(promise).await.unwrap().unchecked_into()
    }

    /// A 6000×4000 JPEG: decoded and downscaled by the browser (`createImageBitmap`) to 512 px
    /// on the shorter side, while a 5 ms timer on the page keeps firing (its longest gap is
    /// how long the page was frozen).
    #[wasm_bindgen_test]
    async fn a_6000_by_4000_jpeg_is_downscaled_without_freezing_the_page() {
        let draw = "const gr = g.createLinearGradient(0, 0, 6000, 4000); gr.addColorStop(0, '#203080');
                    gr.addColorStop(1, '#f0c040'); g.fillStyle = gr; g.fillRect(0, 0, 6000, 4000);
                    g.fillStyle = '#c03020'; g.fillRect(2000, 1000, 2000, 2000);";
        let jpeg = canvas_blob(6000, 4000, "image/jpeg", draw).await;
        console_log!("6000×4000 JPEG: {} bytes", jpeg.size());
        js_sys::eval(
            "window.__gap = 0; window.__last = performance.now();
             window.__timer = setInterval(() => { const n = performance.now();
               window.__gap = Math.max(window.__gap, n - window.__last); window.__last = n; }, 5);",
        )
        .unwrap();
        let t0 = js_sys::Date::now();
        let pic = decode_image(&jpeg, "huge.jpg").await.unwrap();
        let took = js_sys::Date::now() - t0;
        let gap = js_sys::eval("clearInterval(window.__timer); window.__gap").unwrap().as_f64().unwrap();
        console_log!("decoded to {}×{} in {took:.0} ms; longest timer gap {gap:.0} ms", pic.width, pic.height);
        assert_eq!((pic.width, pic.height), (768, 512));
        // the red square sits in the middle
        let mid = ((256 * 768 + 384) * 4) as usize;
        assert!(pic.rgba[mid] > 150 && pic.rgba[mid + 1] < 90, "{:?}", &pic.rgba[mid..mid + 4]);
        assert!(gap < 500.0, "the page was frozen for {gap:.0} ms while decoding");
    }

    /// A PNG with a transparent half keeps its alpha when decoded, and the model sees the
    /// transparent pixels as white (composited, as the CLI drops alpha of opaque images).
    #[wasm_bindgen_test]
    async fn alpha_is_kept_and_composited_over_white() {
        let png = canvas_blob(40, 40, "image/png", "g.fillStyle = '#000'; g.fillRect(0, 0, 20, 40);").await;
        let pic = decode_image(&png, "half.png").await.unwrap();
        assert_eq!(pic.rgba[3], 255);
        assert_eq!(pic.rgba[(30 * 4 + 3) as usize], 0, "right half is transparent");
        let model = parse_model(MODEL).unwrap();
        let x = model_input(&pic, &model.cfg, &model.norm);
        let white = model.norm.apply(0, 1.0);
        let black = model.norm.apply(0, 0.0);
        let s = model.cfg.img_size;
        assert!((x[s / 2 * s + s - 2] - white).abs() < 0.05, "{} vs white {white}", x[s / 2 * s + s - 2]);
        assert!((x[s / 2 * s + 1] - black).abs() < 0.05, "{} vs black {black}", x[s / 2 * s + 1]);
    }

    #[wasm_bindgen_test]
    async fn grey_png_decodes_to_equal_channels() {
        let pic = decode_image(&blob(TEST_0, "image/png"), "t0.png").await.unwrap();
        assert_eq!((pic.width, pic.height), (28, 28));
        assert!(pic.rgba.chunks_exact(4).all(|p| p[0] == p[1] && p[1] == p[2] && p[3] == 255));
        assert!(pic.rgba.chunks_exact(4).any(|p| p[0] > 100), "all dark");
    }

    /// `patchwork reconstruct --seed 0` on the CPU backend (tests/cli_parity.rs holds them):
    /// `(ratio, mse, mse_mean_fill)`.
    const CLI: [(f64, f64, f64); 4] = [
        (0.25, 0.014831325944347919, 0.07432289037390596),
        (0.5, 0.013639519579851725, 0.07356543720506051),
        (0.75, 0.0142825150656265, 0.0762878225024871),
        (0.9, 0.013489576688891662, 0.0823880428697094),
    ];

    /// The page's numbers on `kind` against the CLI's, to 1e-4 relative, through the
    /// browser's PNG decoder.
    async fn matches_the_cli(kind: BackendKind) {
        let model = Rc::new(parse_model(MODEL).unwrap());
        let pic = decode_image(&blob(TEST_0, "image/png"), "t0.png").await.unwrap();
        let x = model_input(&pic, &model.cfg, &model.norm);
        let engine = Engine::load(model, kind).await.unwrap();
        let mut rows = Vec::new();
        engine.reconstruct(&x, &CLI.map(|c| c.0), 0, |r| rows.push(r), || false).await.unwrap();
        assert_eq!(rows.len(), 4);
        for (row, (ratio, mse, base)) in rows.iter().zip(CLI) {
            console_log!("{kind:?} ratio {ratio}: browser {} / {}, CLI {mse} / {base}", row.mse, row.mse_mean_fill);
            assert!((row.mse - mse).abs() / mse < 1e-4, "{kind:?} ratio {ratio}: {} vs {mse}", row.mse);
            assert!((row.mse_mean_fill - base).abs() / base < 1e-4, "ratio {ratio}: {} vs {base}", row.mse_mean_fill);
        }
    }

    #[wasm_bindgen_test]
    async fn cpu_backend_in_the_browser_gives_the_clis_errors() {
        matches_the_cli(BackendKind::Cpu).await;
    }

    /// The WGSL kernels on the browser's WebGPU adapter (SwiftShader here).
    #[wasm_bindgen_test]
    async fn webgpu_backend_in_the_browser_gives_the_clis_errors() {
        if let Err(e) = probe::gpu().await {
            assert!(!require_gpu(), "PATCHWORK_REQUIRE_GPU=1 but {e}");
            console_log!("skipped: {e}");
            return;
        }
        matches_the_cli(BackendKind::WebGpu).await;
    }

    #[wasm_bindgen_test]
    fn auto_backend_passes_over_a_software_adapter() {
        let info = |name: &str, fallback| GpuInfo {
            name: name.into(),
            vendor: String::new(),
            architecture: String::new(),
            backend: "webgpu".into(),
            fallback,
            limits: vec![],
            features: vec![],
        };
        let report = |device| Report { device, kernel: None };
        assert_eq!(auto_backend(&report(Device::Gpu(info("NVIDIA H100", false)))), BackendKind::WebGpu);
        assert_eq!(auto_backend(&report(Device::Gpu(info("", true)))), BackendKind::Cpu);
        assert_eq!(auto_backend(&report(Device::Gpu(info("SwiftShader Device", false)))), BackendKind::Cpu);
        assert_eq!(auto_backend(&report(Device::Cpu { reason: "none".into() })), BackendKind::Cpu);
    }
}

mod attention {
    use super::*;
    use patchwork_app::attention::compute::VitEngine;
    use patchwork_app::attention::page::{Analysis, AttentionView};
    use patchwork_app::attention::{model_input, parse_vit, tile_scale};
    use patchwork_app::browser::decode_image;
    use patchwork_app::engine::BackendKind;
    use patchwork_app::reconstruct::Picture;
    use patchwork_compute::attention::{cls_maps, mass_mask, patch_row, MASS};
    use patchwork_compute::AttentionMap;
    use std::sync::Arc;

    const MODEL: &[u8] = include_bytes!("../../assets/models/mae-fashion-mnist.safetensors");
    const TEST_0: &[u8] = include_bytes!("../../assets/models/fashion-mnist-test-0.png");

    fn blob(bytes: &[u8]) -> web_sys::Blob {
        let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
        let opts = web_sys::BlobPropertyBag::new();
        opts.set_type("image/png");
        web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts).unwrap()
    }

    /// 2 heads on a 2×2 grid, `depth` layers; head 1 looks at patch 3, head 0 at patch 0.
    fn toy(depth: usize) -> Analysis {
        let (heads, l) = (2, 4);
        let map = AttentionMap {
            batch: 1,
            heads,
            grid: [2, 2],
            // [1, heads, l, l]: every patch looks mostly at itself
            patches: (0..heads * l * l).map(|i| if (i / l) % l == i % l { 0.7 } else { 0.1 }).collect(),
            cls: Some(vec![0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.1, 0.7]),
            cls_to_registers: Vec::new(),
        };
        let seen =
            Picture::new(8, 8, (0..64).flat_map(|i| [(i * 4) as u8, (i * 4) as u8, (i * 4) as u8, 255]).collect());
        Analysis { label: "toy".into(), patch_size: 4, grid: [2, 2], scale: 4, seen, maps: Arc::new(vec![map; depth]) }
    }

    #[wasm_bindgen_test]
    fn mass_mask_and_map_extraction_run_in_the_browser() {
        let a = toy(1);
        let m = cls_maps(&a.maps[0], 0, MASS).unwrap();
        assert_eq!(m.heads[1], [0.05, 0.05, 0.1, 0.7]);
        assert_eq!(m.mean, [0.275, 0.125, 0.1, 0.4]);
        // head 1: 0.7 of 0.9 is 78% ≥ 60% → patch 3 alone
        assert_eq!(m.masks[1], [false, false, false, true]);
        assert_eq!(m.mean_mask, mass_mask(&m.mean, MASS));
        assert_eq!(m.mean_mask, [true, false, false, true]);
        let (heads, mean) = patch_row(&a.maps[0], 0, 2);
        assert_eq!(heads[0], [0.1, 0.1, 0.7, 0.1]);
        assert_eq!(mean, [0.1, 0.1, 0.7, 0.1]);
    }

    fn count(host: &web_sys::HtmlElement, selector: &str) -> u32 {
        host.query_selector_all(selector).unwrap().length()
    }

    /// Click `canvas` at `(x, y)` CSS pixels from its top-left corner, as a mouse would.
    fn click(canvas: &web_sys::Element, x: f64, y: f64) {
        let f = js_sys::Function::new_with_args(
            "el, x, y",
            "const r = el.getBoundingClientRect();
             el.dispatchEvent(new MouseEvent('click', { bubbles: true, clientX: r.left + x, clientY: r.top + y }));",
        );
        f.call3(&wasm_bindgen::JsValue::NULL, canvas, &x.into(), &y.into()).unwrap();
    }

    async fn tick() {
        patchwork_app::engine::next_tick().await;
    }

    #[wasm_bindgen_test]
    async fn view_shows_a_tile_per_head_the_mean_and_the_mask_and_a_clicked_patchs_attention() {
        let analysis = RwSignal::new(Some(toy(3)));
        let (layer, mass, query) = (RwSignal::new(None), RwSignal::new(MASS), RwSignal::new(None));
        let host = mount(move || view! { <AttentionView analysis layer mass query /> });
        tick().await;
        assert_eq!(count(&host, "[data-testid=tile-input] canvas"), 1);
        assert_eq!(count(&host, "[data-testid=tile-head] canvas"), 2);
        assert_eq!(count(&host, "[data-testid=tile-mean] canvas"), 1);
        assert_eq!(count(&host, "[data-testid=tile-mask] canvas"), 1);
        // 8 px input × scale 4: 32 px tiles
        let canvas = host.query_selector("[data-testid=tile-mean] canvas").unwrap().unwrap();
        assert_eq!(canvas.get_attribute("width").as_deref(), Some("32"));
        // three layers, the last shown by default
        assert_eq!(count(&host, "[data-testid=layer-select] option"), 3);
        let tiles = host.query_selector("[data-testid=attention-tiles]").unwrap().unwrap();
        assert_eq!(tiles.get_attribute("data-layer").as_deref(), Some("2"));
        assert!(testid(&host, "tile-mask").contains("2/4 patches"), "{}", testid(&host, "tile-mask"));
        assert_eq!(count(&host, "[data-testid=patch-view]"), 0);

        // a click on the bottom-right quarter of the mean tile picks patch 3
        click(&canvas, 24.0, 24.0);
        tick().await;
        assert_eq!(query.get_untracked(), Some(3));
        assert_eq!(count(&host, "[data-testid=patch-tile-head] canvas"), 2);
        assert_eq!(count(&host, "[data-testid=patch-tile-mean] canvas"), 1);
        assert!(testid(&host, "patch-label").contains("row 1, column 1"), "{}", testid(&host, "patch-label"));
        assert!(testid(&host, "patch-view").contains("70% on itself"), "{}", testid(&host, "patch-view"));

        // a higher threshold keeps more patches; clear hides the patch view
        mass.set(0.95);
        tick().await;
        assert!(
            testid(&host, "tile-mask").contains("95%-mass mask of the mean: 4/4"),
            "{}",
            testid(&host, "tile-mask")
        );
        let clear: web_sys::HtmlElement =
            host.query_selector("[data-testid=patch-clear]").unwrap().unwrap().unchecked_into();
        clear.click();
        tick().await;
        assert_eq!(count(&host, "[data-testid=patch-view]"), 0);
    }

    /// `patchwork attention --model assets/models/mae-fashion-mnist.safetensors
    ///  --image assets/models/fashion-mnist-test-0.png --backend cpu --json`: the last
    /// layer's mean map (7×7) and the 60%-mass mask of it.
    const CLI_MEAN: [f32; 49] = [
        0.0024025554,
        0.0033769042,
        0.0056440183,
        0.01338517,
        0.008391342,
        0.0033470104,
        0.003444182,
        0.0021960489,
        0.0020681631,
        0.0031491597,
        0.013015135,
        0.011931623,
        0.009400907,
        0.0074097635,
        0.004210584,
        0.004217423,
        0.012536266,
        0.009039507,
        0.026743755,
        0.029124316,
        0.08654129,
        0.01185009,
        0.016515737,
        0.008604532,
        0.011218694,
        0.004596751,
        0.0020857435,
        0.0050474927,
        0.003020157,
        0.003141872,
        0.0020806505,
        0.0031321202,
        0.0030891486,
        0.0012955221,
        0.0015348756,
        0.042037502,
        0.060501132,
        0.08089483,
        0.11373783,
        0.048830003,
        0.16763926,
        0.06292168,
        0.002415688,
        0.006047191,
        0.017971294,
        0.02912901,
        0.012157201,
        0.0046266457,
        0.0031682758,
    ];
    const CLI_MEAN_MASK: [usize; 7] = [20, 36, 37, 38, 39, 40, 41];

    /// The page's maps on `kind` against the CLI's, to 1e-4 relative (1e-7 absolute).
    async fn matches_the_cli(kind: BackendKind) {
        let (model, file) = parse_vit(MODEL).unwrap();
        assert_eq!(model.source, "MAE encoder (config metadata)");
        assert_eq!(tile_scale(&model.cfg), 5);
        let pic = decode_image(&blob(TEST_0), "t0.png").await.unwrap();
        let input = model_input(&pic, &model.cfg, &model.norm);
        let cfg = model.cfg.clone();
        let engine = VitEngine::load(model, &file, kind).await.unwrap();
        let maps = engine.attention(&input.x, cfg.img_size).await.unwrap();
        assert_eq!(maps.len(), 4);
        let m = cls_maps(&maps[3], 0, MASS).unwrap();
        for (i, (got, want)) in m.mean.iter().zip(CLI_MEAN).enumerate() {
            assert!((got - want).abs() <= 1e-4 * want + 1e-7, "{kind:?} mean[{i}]: page {got}, CLI {want}");
        }
        let kept: Vec<usize> = (0..49).filter(|i| m.mean_mask[*i]).collect();
        assert_eq!(kept, CLI_MEAN_MASK, "{kind:?}");
        console_log!("{kind:?}: mean[40] {} (CLI {})", m.mean[40], CLI_MEAN[40]);
        // twice the size: a 14×14 grid through interpolated position embeddings
        let big = patchwork_compute::VitConfig { img_size: [56, 56], ..cfg };
        let input = model_input(&pic, &big, &engine.model.norm);
        let maps = engine.attention(&input.x, big.img_size).await.unwrap();
        let m = cls_maps(&maps[3], 0, MASS).unwrap();
        assert_eq!(m.mean.len(), 196);
        let sum: f32 = m.mean.iter().sum();
        assert!(sum > 0.0 && sum <= 1.0 + 1e-5 && m.mean_mask.contains(&true), "{kind:?}: {sum}");
        assert!(engine.attention(&input.x, [30, 30]).await.is_err(), "30 px is not on a 4-px patch grid");
    }

    #[wasm_bindgen_test]
    async fn cpu_backend_in_the_browser_gives_the_clis_maps() {
        matches_the_cli(BackendKind::Cpu).await;
    }

    #[wasm_bindgen_test]
    async fn webgpu_backend_in_the_browser_gives_the_clis_maps() {
        if let Err(e) = probe::gpu().await {
            assert!(!require_gpu(), "PATCHWORK_REQUIRE_GPU=1 but {e}");
            console_log!("skipped: {e}");
            return;
        }
        matches_the_cli(BackendKind::WebGpu).await;
    }

    #[wasm_bindgen_test]
    fn a_file_that_is_not_a_vit_is_refused_by_name() {
        let e = parse_vit(b"these are notes, not tensors").err().unwrap();
        assert!(e.starts_with("not a safetensors model"), "{e}");
    }
}
