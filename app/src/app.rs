//! The page shell: header, then the compute device and its self-check.
use leptos::prelude::*;

use crate::device_panel::DevicePanel;
use crate::probe;

#[component]
pub fn App() -> impl IntoView {
    // Probed once per page load; the panel renders the plain report.
    let report = LocalResource::new(probe::probe);
    view! {
        <header class="top">
            <h1>"Patchwork"</h1>
            <p class="tagline">"Self-supervised Vision Transformers on your own GPU, in the browser."</p>
        </header>
        <main>
            <Suspense fallback=|| {
                view! { <section class="panel" data-testid="device-probing">"Looking for a WebGPU adapter…"</section> }
            }>
                {move || report.get().map(|report| view! { <DevicePanel report /> })}
            </Suspense>
        </main>
        <footer>"Reconstruction, attention maps and training arrive in later versions."</footer>
    }
}
