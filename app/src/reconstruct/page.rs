//! The Reconstruct page: pick an image (gallery, file, drop, paste), see what the MAE makes
//! of it at several mask ratios, with the error on the removed patches beside a mean-fill
//! baseline's.
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::{cell_size, grid, model_input, panel, parse_model, Panel, Picture};
use crate::browser;
use crate::engine::{BackendKind, Engine, Row};
use crate::image_source::ImageSource;
use crate::settings::{SettingsCtx, RATIO_MAX, RATIO_MIN};

/// The grid's fixed rows; the slider's ratio is the last row.
pub const RATIOS: [f64; 4] = [0.25, 0.5, 0.75, 0.9];

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Idle,
    Working { done: usize, total: usize },
    Failed(String),
}

/// `backend`: the backend to compute on, once known.
#[component]
pub fn ReconstructPage(backend: Signal<Option<BackendKind>>) -> impl IntoView {
    let SettingsCtx(settings) = expect_context();
    let models = LocalResource::new(|| async {
        let list = browser::fetch_text("models.txt").await?;
        Ok::<_, String>(
            browser::parse_models_list(&list)
                .into_iter()
                .filter(|(_, method)| method.is_empty() || method == "mae")
                .map(|(name, _)| name)
                .collect::<Vec<_>>(),
        )
    });
    let model_name = Memo::new(move |_| {
        let chosen = settings.with(|s| s.model.clone());
        let list = models.get().and_then(Result::ok).unwrap_or_default();
        chosen.filter(|m| list.contains(m)).or_else(|| list.first().cloned())
    });
    // A checkpoint the user picked from disk ("load a checkpoint…"): it wins over the
    // bundled choice until a bundled model is picked again.
    let uploaded = RwSignal::new(None::<(String, Arc<Vec<u8>>)>);
    let engine = LocalResource::new(move || {
        let (name, kind, own) = (model_name.get(), backend.get(), uploaded.get());
        async move {
            let kind = kind?;
            let (name, bytes) = match (own, name) {
                (Some((name, bytes)), _) => (name, bytes),
                (None, Some(name)) => match browser::fetch_bytes(&format!("models/{name}")).await {
                    Ok(b) => (name, Arc::new(b)),
                    Err(e) => return Some(Err(e)),
                },
                (None, None) => return None,
            };
            let model = match parse_model(&bytes) {
                Ok(m) => Rc::new(m),
                Err(e) => return Some(Err(format!("{name}: {e}"))),
            };
            Some(Engine::load(model, kind).await.map(|e| (name, e)))
        }
    });
    let model_error = RwSignal::new(None::<String>);
    let on_model_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(file) = input.files().and_then(|f| f.get(0)) {
            let name = file.name();
            spawn_local(async move {
                match browser::blob_bytes(&file).await {
                    Ok(bytes) if bytes.is_empty() => model_error.set(Some(format!("{name} is empty (0 bytes)"))),
                    Ok(bytes) => {
                        model_error.set(None);
                        uploaded.set(Some((name, Arc::new(bytes))));
                    }
                    Err(e) => model_error.set(Some(format!("{name}: {e}"))),
                }
            });
        }
        input.set_value("");
    };

    let picture = RwSignal::new(None::<(String, Picture)>);
    let upload_error = RwSignal::new(None::<String>);
    let rows = RwSignal::new(Vec::<Row>::new());
    let status = RwSignal::new(Status::Idle);
    // The image (name and settings) the finished grid shows, for tests and screen readers.
    let done_for = RwSignal::new(String::new());
    let generation = Rc::new(Cell::new(0u64));

    // Recompute whenever the model, the image, the seed or the slider changes; a newer
    // request makes an older one stop between rows.
    Effect::new(move |_| {
        let Some(Some(Ok((model, engine)))) = engine.get() else { return };
        let Some((name, pic)) = picture.get() else { return };
        let (seed, slider) = settings.with(|s| (s.seed, s.ratio));
        done_for.set(String::new());
        let gen = generation.get() + 1;
        generation.set(gen);
        let generation = generation.clone();
        spawn_local(async move {
            let x = model_input(&pic, &engine.model.cfg, &engine.model.norm);
            let ratios: Vec<f64> = RATIOS.iter().copied().chain([slider]).collect();
            let total = ratios.len();
            status.set(Status::Working { done: 0, total });
            let mut done = 0;
            let result = engine
                .reconstruct(
                    &x,
                    &ratios,
                    seed,
                    |row| {
                        rows.update(|rows| match rows.get_mut(done) {
                            Some(slot) => *slot = row,
                            None => rows.push(row),
                        });
                        done += 1;
                        status.set(Status::Working { done, total });
                    },
                    || generation.get() != gen,
                )
                .await;
            if generation.get() == gen {
                rows.update(|r| r.truncate(total));
                match result {
                    Ok(()) => {
                        status.set(Status::Idle);
                        done_for.set(format!("{name} · seed {seed} · slider {slider} · {model}"));
                    }
                    Err(e) => status.set(Status::Failed(e)),
                }
            }
        });
    });

    let engine_line = move || match engine.get() {
        None | Some(None) => view! { <p class="muted" data-testid="model-status">"Loading the model…"</p> }.into_any(),
        Some(Some(Err(e))) => {
            view! { <p class="error" data-testid="model-status">{format!("Model not loaded: {e}")}</p> }.into_any()
        }
        Some(Some(Ok((name, engine)))) => {
            let c = &engine.model.cfg;
            let text = format!(
                "{}{} · {}×{}{} · patches {}×{} ({} of them) · trained at mask ratio {} · on the {}",
                name,
                if engine.model.inferred { " (no metadata: config read from its shapes)" } else { "" },
                c.img_size,
                c.img_size,
                if c.in_chans == 1 { " grey" } else { " RGB" },
                c.patch_size,
                c.patch_size,
                c.patches(),
                c.mask_ratio,
                engine.kind.label()
            );
            view! { <p class="muted" data-testid="model-status">{text}</p> }.into_any()
        }
    };
    let model_options = move || {
        let names = models.get().and_then(Result::ok).unwrap_or_default();
        let current = if uploaded.with(Option::is_some) { None } else { model_name.get() };
        names
            .into_iter()
            .map(|n| {
                let selected = current.as_deref() == Some(n.as_str());
                view! { <option value=n.clone() selected=selected>{n.trim_end_matches(".safetensors").to_string()}</option> }
            })
            .collect_view()
    };
    let download = move |_| {
        let Some(Some(Ok((_, engine)))) = engine.get_untracked() else { return };
        let recons: Vec<_> = rows.with_untracked(|r| r.iter().map(|r| r.recon.clone()).collect());
        let pic = grid(&engine.model.cfg, &recons, cell_size(&engine.model.cfg));
        if let Err(e) = browser::download_png(&pic, "patchwork-reconstruct.png") {
            upload_error.set(Some(e));
        }
    };

    view! {
        <section class="panel" data-testid="page-reconstruct">
            <h2>"Reconstruct"</h2>
            <p class="lead">
                "A masked autoencoder (MAE) sees only a random few patches of an image and paints the rest. "
                "Pick an image and watch what it guesses."
            </p>
            <div class="controls">
                <label>"Model " <select data-testid="model-select" on:change=move |ev| {
                    let v = event_target_value(&ev);
                    uploaded.set(None);
                    settings.update(|s| s.model = Some(v));
                }>
                    {model_options}
                    {move || uploaded.get().map(|(n, _)| view! { <option selected=true>{n}</option> })}
                </select></label>
                <label class="button" title="an MAE safetensors file: one patchwork train wrote, or an official checkpoint saved as safetensors">
                    "Load a checkpoint…"
                    <input type="file" accept=".safetensors" data-testid="model-file" on:change=on_model_file />
                </label>
                {engine_line}
            </div>
            <ImageSource picture error=upload_error />
            {move || model_error.get().map(|e| view! { <p class="error" data-testid="model-error">{e}</p> })}
            {move || upload_error.get().map(|e| view! { <p class="error" data-testid="upload-error">{e}</p> })}
            <div class="controls">
                <label>
                    "Slider ratio "
                    <input
                        type="range"
                        data-testid="ratio-slider"
                        min=RATIO_MIN
                        max=RATIO_MAX
                        step="0.05"
                        prop:value=move || settings.with(|s| s.ratio)
                        on:input=move |ev| {
                            if let Ok(r) = event_target_value(&ev).parse::<f64>() {
                                settings.update(|s| s.ratio = (r * 100.0).round() / 100.0);
                            }
                        }
                    />
                    <strong>{move || format!("{:.2}", settings.with(|s| s.ratio))}</strong>
                </label>
                <label>
                    "Seed "
                    <input
                        type="number"
                        min="0"
                        data-testid="seed-input"
                        prop:value=move || settings.with(|s| s.seed.to_string())
                        on:change=move |ev| {
                            if let Ok(seed) = event_target_value(&ev).trim().parse::<u64>() {
                                settings.update(|s| s.seed = seed);
                            }
                        }
                    />
                </label>
                <button data-testid="new-mask" on:click=move |_| settings.update(|s| s.seed = s.seed.wrapping_add(1))>
                    "New mask"
                </button>
                <button data-testid="download" on:click=download disabled=move || rows.with(Vec::is_empty)>
                    "Download grid (PNG)"
                </button>
                <span class="muted" data-testid="progress">
                    {move || match status.get() {
                        Status::Idle => String::new(),
                        Status::Working { done, total } => format!("reconstructing… {done}/{total}"),
                        Status::Failed(e) => format!("failed: {e}"),
                    }}
                </span>
            </div>
            <p class="muted" data-testid="image-name">
                {move || picture.with(|p| p.as_ref().map(|(n, p)| format!("Image: {n} ({}×{})", p.width, p.height)))}
            </p>
            <ReconGrid rows done_for />
            <Explainer />
        </section>
    }
}

/// The grid: one row per ratio, four pictures and the two errors.
#[component]
pub fn ReconGrid(rows: RwSignal<Vec<Row>>, #[prop(into)] done_for: Signal<String>) -> impl IntoView {
    view! {
        <table class="recon-grid" data-testid="recon-grid" data-done-for=move || done_for.get()>
            <thead>
                <tr>
                    <th>"mask ratio"</th>
                    {Panel::ALL.map(|p| view! { <th>{p.title()}</th> })}
                    <th>"error on removed patches"</th>
                </tr>
            </thead>
            <tbody>
                {move || {
                    rows.get().into_iter().map(|row| view! { <ReconRow row /> }).collect_view()
                }}
            </tbody>
        </table>
    }
}

#[component]
pub fn ReconRow(row: Row) -> impl IntoView {
    let cfg = row.cfg.clone();
    let cell = cell_size(&cfg);
    let ratio_text = format!("{:.2}", row.ratio);
    let ratio_attr = row.ratio.to_string();
    let errors = format!(
        "model {:.4} · mean fill {:.4} ({:.2}×)",
        row.mse,
        row.mse_mean_fill,
        row.mse / row.mse_mean_fill.max(1e-12)
    );
    let masked = format!("{} patches removed", row.masked_patches);
    let panels = Panel::ALL.map(|p| {
        let pic = panel(&cfg, &row.recon, p, cell);
        view! { <td><PixelCanvas picture=pic testid=panel_testid(p) label=p.title() /></td> }
    });
    view! {
        <tr data-testid="recon-row" data-ratio=ratio_attr data-mse=row.mse.to_string() data-mse-mean-fill=row.mse_mean_fill.to_string()>
            <th>{ratio_text}<br /><span class="muted small">{masked}</span></th>
            {panels}
            <td class="errors" data-testid="row-errors">{errors}</td>
        </tr>
    }
}

fn panel_testid(p: Panel) -> &'static str {
    match p {
        Panel::Masked => "panel-masked",
        Panel::Reconstruction => "panel-reconstruction",
        Panel::Pasted => "panel-pasted",
        Panel::Original => "panel-original",
    }
}

/// A picture on a 2D canvas (`putImageData`).
#[component]
pub fn PixelCanvas(picture: Picture, testid: &'static str, label: &'static str) -> impl IntoView {
    let node = NodeRef::<leptos::html::Canvas>::new();
    let (w, h) = (picture.width, picture.height);
    Effect::new(move |_| {
        if let Some(canvas) = node.get() {
            let _ = browser::draw(&canvas, &picture);
        }
    });
    view! { <canvas node_ref=node width=w height=h data-testid=testid aria-label=label /> }
}

#[component]
fn Explainer() -> impl IntoView {
    view! {
        <details class="explain" data-testid="explainer" open>
            <summary>"What is going on?"</summary>
            <p>
                "A masked autoencoder cuts the image into square patches, hides most of them at random, and "
                "trains a Vision Transformer to paint the hidden ones back from the few it sees. The encoder "
                "looks only at the visible patches; a small decoder gets the encoder's summary plus a "
                "placeholder for every hidden patch and predicts their pixels. The loss counts only the "
                "hidden patches, so the noisy visible ones in the reconstruction column never mattered."
            </p>
            <p>
                "Why hide as much as 75%? Images are very redundant: with a few patches hidden, a model can "
                "fill them by copying neighbouring pixels and learns little. With three quarters gone, "
                "blurring neighbours no longer works; it has to know what a shoe or a pullover looks like. "
                "That harder task teaches features that transfer, and the encoder runs on only a quarter of "
                "the patches, which makes training about three times cheaper."
            </p>
            <p>
                "The numbers beside each row are the mean squared error on the hidden patches, in pixels "
                "scaled to [0, 1], against a baseline that paints every hidden patch with the average colour "
                "of the visible ones. Masks come from the seed: the same image, seed and ratios give the same "
                "numbers as " <code>"patchwork reconstruct --seed N --mask-ratio …"</code> "."
            </p>
        </details>
    }
}
