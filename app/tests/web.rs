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
