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
