//! Where a page's image comes from: a small gallery of bundled images, the file picker,
//! drag and drop, or paste (anywhere on the page). Shared by the Reconstruct and Attention
//! pages; decoding is the browser's ([`browser::decode_image`]).
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::browser;
use crate::reconstruct::Picture;

/// Bundled images: `(label, url)`. The first is each page's default.
pub const GALLERY: [(&str, &str); 8] = [
    ("ankle boot (Fashion-MNIST test 0)", "models/fashion-mnist-test-0.png"),
    ("pullover (Fashion-MNIST test 1)", "models/fashion-mnist-test-1.png"),
    ("cat (held out)", "photos/heldout/chelsea.jpg"),
    ("rocket (held out)", "photos/heldout/rocket.jpg"),
    ("astronaut", "photos/train/astronaut.jpg"),
    ("coffee", "photos/train/coffee.jpg"),
    ("owl (held-out object scene)", "objects/owl-blurred.png"),
    ("strawberry (held-out object scene)", "objects/strawberry2-plain.png"),
];

/// The gallery and the drop zone (with its file input); paste works anywhere while this is
/// mounted. Loads the gallery's first image at once. A decoded image goes to `picture` as
/// `(name, pixels)`; a file that does not decode leaves `picture` as it was and puts a
/// message in `error`.
#[component]
pub fn ImageSource(picture: RwSignal<Option<(String, Picture)>>, error: RwSignal<Option<String>>) -> impl IntoView {
    let load = move |name: String, blob: web_sys::Blob| {
        spawn_local(async move {
            match browser::decode_image(&blob, &name).await {
                Ok(pic) => {
                    error.set(None);
                    picture.set(Some((name, pic)));
                }
                Err(e) => error.set(Some(e)),
            }
        })
    };
    let load_url = move |label: String, url: &'static str| {
        spawn_local(async move {
            match browser::fetch_blob(url).await {
                Ok(blob) => load(label, blob),
                Err(e) => error.set(Some(e)),
            }
        })
    };
    load_url(GALLERY[0].0.to_string(), GALLERY[0].1);

    let on_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(file) = input.files().and_then(|f| f.get(0)) {
            load(file.name(), file.into());
        }
        input.set_value("");
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        if let Some(file) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
            load(file.name(), file.into());
        }
    };
    let paste = window_event_listener(leptos::ev::paste, move |ev| {
        if let Some(file) = ev.clipboard_data().and_then(|d| d.files()).and_then(|f| f.get(0)) {
            ev.prevent_default();
            load(if file.name().is_empty() { "pasted image".into() } else { file.name() }, file.into());
        }
    });
    on_cleanup(move || paste.remove());

    view! {
        <div class="sources">
            <div class="gallery" data-testid="gallery">
                {GALLERY
                    .into_iter()
                    .map(|(label, url)| {
                        view! {
                            <button class="thumb" title=label on:click=move |_| load_url(label.to_string(), url)>
                                <img src=url alt=label />
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
            <label
                class="drop"
                data-testid="drop-zone"
                on:dragover=|ev: leptos::ev::DragEvent| ev.prevent_default()
                on:drop=on_drop
            >
                "Drop an image here, paste one, or "
                <span class="link">"choose a file"</span>
                <input type="file" accept="image/*" data-testid="file-input" on:change=on_file />
            </label>
        </div>
    }
}
