//! The page shell: a header with the pages, the backend setting and the device badge, then
//! the current page. Page and settings live in the URL (see [`crate::settings`]).
use leptos::prelude::*;

use crate::attention::page::AttentionPage;
use crate::device_panel::DeviceBadge;
use crate::engine::BackendKind;
use crate::probe::{self, Device, Report};
use crate::reconstruct::page::ReconstructPage;
use crate::settings::{self, BackendPref, Page, SettingsCtx};
use crate::train::page::TrainPage;

/// The faster backend for what the probe found: WebGPU on a hardware adapter, the CPU
/// backend on a software one (SwiftShader is slower than plain Rust on the same cores) or
/// without WebGPU.
pub fn auto_backend(report: &Report) -> BackendKind {
    match &report.device {
        Device::Gpu(info) if !info.is_software() => BackendKind::WebGpu,
        _ => BackendKind::Cpu,
    }
}

#[component]
pub fn App() -> impl IntoView {
    let settings = settings::from_location();
    provide_context(SettingsCtx(settings));
    // Probed once per page load; the badge renders the plain report.
    let report = LocalResource::new(probe::probe);
    let pref = Memo::new(move |_| settings.with(|s| s.backend));
    // A forced backend needs no probe; `Auto` waits for it.
    let backend = Signal::derive(move || match pref.get() {
        BackendPref::Force(kind) => Some(kind),
        BackendPref::Auto => report.get().map(|r| auto_backend(&r)),
    });
    let page = Memo::new(move |_| settings.with(|s| s.page));

    view! {
        <header class="top">
            <div class="brand">
                <h1>"Patchwork"</h1>
                <p class="tagline">"Self-supervised Vision Transformers on your own GPU, in the browser."</p>
            </div>
            <nav data-testid="nav">
                {Page::ALL
                    .map(|p| {
                        let href = format!("?page={}", p.slug());
                        view! {
                            <a
                                href=href
                                data-testid=format!("nav-{}", p.slug())
                                class:active=move || page.get() == p
                                on:click=move |ev| {
                                    ev.prevent_default();
                                    settings.update(|s| s.page = p);
                                }
                            >
                                {p.title()}
                            </a>
                        }
                    })}
            </nav>
            <div class="device-bar">
                <label class="setting">
                    "Backend "
                    <select
                        data-testid="backend-select"
                        on:change=move |ev| {
                            if let Some(b) = BackendPref::parse(&event_target_value(&ev)) {
                                settings.update(|s| s.backend = b);
                            }
                        }
                    >
                        {[("auto", "auto (fastest)"), ("webgpu", "WebGPU"), ("cpu", "CPU")]
                            .map(|(v, label)| {
                                view! {
                                    <option value=v selected=move || pref.get().slug() == v>
                                        {label}
                                    </option>
                                }
                            })}
                    </select>
                </label>
                <span class="chip backend" data-testid="backend-in-use">
                    {move || backend.get().map_or("choosing backend…", BackendKind::label)}
                </span>
                <Suspense fallback=|| {
                    view! { <span class="badge" data-testid="device-probing">"Looking for a WebGPU adapter…"</span> }
                }>{move || report.get().map(|report| view! { <DeviceBadge report /> })}</Suspense>
            </div>
        </header>
        <main>
            {move || match page.get() {
                Page::Reconstruct => view! { <ReconstructPage backend /> }.into_any(),
                Page::Attention => view! { <AttentionPage backend /> }.into_any(),
                Page::Train => view! { <TrainPage backend /> }.into_any(),
            }}
        </main>
        <footer>"Patchwork: one Rust engine, WGSL kernels and a CPU reference, in the browser and on the command line."</footer>
    }
}
