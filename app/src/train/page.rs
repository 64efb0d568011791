//! The Train page: pick a method, a model size and a schedule; start, pause, resume or stop
//! the run; watch its loss, learning rate, speed and held-out kNN / linear-probe accuracy
//! as they come in; resume a saved run after a reload; export weights and curves. The work
//! itself is [`super::run`]'s; this component owns the signals it publishes to.
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use patchwork_compute::train::{BackboneKind, Method, METHODS};

use super::TrainForm;
use super::{
    describe, export_model, load_fashion, load_photos, Command, DataChoice, Preset, RunSignals, Status, TrainData,
};
use crate::chart::{ChartSpec, LineChart, Series};
use crate::engine::BackendKind;
use crate::reconstruct::page::PixelCanvas;
use crate::store::{self, RunSummary};

const INK: (u8, u8, u8) = (0x3d, 0x40, 0x5b);
const ACCENT: (u8, u8, u8) = (0xe0, 0x7a, 0x5f);
const GREEN: (u8, u8, u8) = (0x2a, 0x9d, 0x8f);

fn series(name: &str, color: (u8, u8, u8), points: &[(f64, f64)]) -> Series {
    Series { name: name.into(), color, points: points.to_vec() }
}

fn chart(title: &str, y_label: &str, series: Vec<Series>, y_range: Option<(f64, f64)>) -> ChartSpec {
    ChartSpec { title: title.into(), y_label: y_label.into(), x_label: "step".into(), series, y_range, log_y: false }
}

fn seconds(s: f64) -> String {
    match s {
        s if !s.is_finite() => "–".into(),
        s if s < 90.0 => format!("{s:.0} s"),
        s => format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0),
    }
}

/// A picked file's path below the picked folder's parent (`File.webkitRelativePath`:
/// `ROOT/CLASS/IMAGE`), or "" for a file picked on its own.
fn relative_path(f: &web_sys::File) -> String {
    js_sys::Reflect::get(f, &"webkitRelativePath".into()).ok().and_then(|v| v.as_string()).unwrap_or_default()
}

/// Offer `bytes` as a file download named `name`.
fn download(bytes: &[u8], name: &str, mime: &str) -> Result<(), String> {
    use wasm_bindgen::JsCast;
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts).map_err(|e| format!("{e:?}"))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| format!("{e:?}"))?;
    let doc = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let a: web_sys::HtmlAnchorElement = doc.create_element("a").map_err(|e| format!("{e:?}"))?.unchecked_into();
    a.set_href(&url);
    a.set_download(name);
    a.click();
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}

#[component]
pub fn TrainPage(backend: Signal<Option<BackendKind>>) -> impl IntoView {
    let sig = RunSignals::new();
    // Bundled models whose backbone a supervised run can fine-tune.
    let bundled = LocalResource::new(|| async {
        let list = crate::browser::fetch_text("models.txt").await.unwrap_or_default();
        crate::browser::parse_models_list(&list).into_iter().filter(|(_, m)| !m.is_empty()).collect::<Vec<_>>()
    });
    let command = RwSignal::new(Command::Run);
    let data: RwSignal<Option<Rc<TrainData>>, LocalStorage> = RwSignal::new_local(None);
    let photo_data: RwSignal<Option<Rc<TrainData>>, LocalStorage> = RwSignal::new_local(None);
    // A folder the user picked: its name, its data, and how many files were not images.
    let folder: RwSignal<Option<(String, Rc<TrainData>, usize)>, LocalStorage> = RwSignal::new_local(None);
    let folder_note = RwSignal::new(String::new());
    // Files with their paths `ROOT/CLASS/IMAGE` (from the folder picker or a drop) → the
    // run's data, or a note saying why not.
    let load_folder = move |files: Vec<(String, web_sys::File)>| {
        spawn_local(async move {
            let root = files
                .first()
                .filter(|(p, _)| p.contains('/'))
                .map(|(p, _)| p.split('/').next().unwrap_or_default().to_string())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "picked files".into());
            let (mut pictures, mut skipped) = (Vec::new(), 0usize);
            for (i, (path, f)) in files.iter().enumerate() {
                folder_note.set(format!("reading “{root}”: {} of {} files…", i + 1, files.len()));
                let path = if path.contains('/') { path.clone() } else { format!("{root}/{}", f.name()) };
                match crate::browser::decode_image(f, &f.name()).await {
                    Ok(pic) => pictures.push((path, pic)),
                    Err(_) => skipped += 1,
                }
            }
            match super::folder_data(pictures) {
                Ok(d) => {
                    let classes = if d.classes.is_empty() {
                        "no class subfolders, so no labels: training works, held-out scores and supervised runs do not"
                            .to_string()
                    } else {
                        format!("{} classes ({})", d.classes.len(), d.classes.join(", "))
                    };
                    folder_note.set(format!(
                        "“{root}”: {} images, {} held out; {classes}{}; shown to the model as 28×28 grey",
                        d.train.images.len() + d.test.images.len(),
                        d.test.images.len(),
                        if skipped > 0 { format!("; {skipped} file(s) skipped (not images)") } else { String::new() }
                    ));
                    folder.set(Some((root.clone(), Rc::new(d), skipped)));
                    sig.form.update(|f| f.data = DataChoice::Folder(root));
                }
                Err(e) => folder_note.set(format!("“{root}”: {e}")),
            }
        });
    };
    let on_folder = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(list) = input.files() else { return };
        load_folder((0..list.length()).filter_map(|i| list.get(i)).map(|f| (relative_path(&f), f)).collect());
    };
    // The last saved run, offered for resuming after a reload.
    let saved = RwSignal::new(None::<(RunSummary, Option<TrainForm>)>);
    let refresh_saved = move || {
        spawn_local(async move {
            let found = match store::latest().await {
                Ok(Some(summary)) => {
                    let form = store::load(&summary.id).await.ok().flatten().and_then(|r| describe(&r.config_json));
                    Some((summary, form))
                }
                _ => None,
            };
            saved.set(found);
        })
    };
    refresh_saved();
    let error = RwSignal::new(None::<String>);

    let start = move |resume_id: Option<String>| {
        let Some(kind) = backend.get_untracked() else {
            error.set(Some("The backend is still being chosen; try again in a moment.".into()));
            return;
        };
        let form = sig.form.get_untracked();
        if let Err(e) = form.validate() {
            error.set(Some(e));
            return;
        }
        error.set(None);
        command.set(Command::Run);
        spawn_local(async move {
            let resume = match resume_id {
                Some(id) => match store::load(&id).await {
                    Ok(Some(r)) => {
                        if let Some(f) = describe(&r.config_json) {
                            sig.form.set(f);
                        }
                        Some(r)
                    }
                    Ok(None) => {
                        sig.status.set(Status::Failed(format!("the saved run {id} is gone")));
                        return;
                    }
                    Err(e) => {
                        sig.status.set(Status::Failed(e.to_string()));
                        return;
                    }
                },
                None => None,
            };
            let d = match sig.form.with_untracked(|f| f.data.clone()) {
                DataChoice::Folder(name) => match folder.get_untracked() {
                    Some((picked, d, _)) if picked == name => d,
                    _ => {
                        sig.status.set(Status::Failed(format!(
                            "this run trains on the folder “{name}”: pick it again (Data → your images), then start or resume"
                        )));
                        return;
                    }
                },
                choice => {
                    let photos = choice == DataChoice::Photos;
                    let cache = if photos { photo_data } else { data };
                    match cache.get_untracked() {
                        Some(d) => d,
                        None => {
                            sig.status.set(Status::Working(format!("loading {}…", choice.label())));
                            let loaded = if photos { load_photos().await } else { load_fashion().await };
                            match loaded {
                                Ok(d) => {
                                    let d = Rc::new(d);
                                    cache.set(Some(d.clone()));
                                    d
                                }
                                Err(e) => {
                                    sig.status.set(Status::Failed(format!("could not load the data: {e}")));
                                    return;
                                }
                            }
                        }
                    }
                }
            };
            let form = sig.form.get_untracked();
            super::run(kind, form, resume, d, command, sig).await;
            refresh_saved();
        });
    };
    let start_new = move |_| start(None);
    let resume_saved = move |_| {
        if let Some((s, _)) = saved.get_untracked() {
            start(Some(s.id))
        }
    };
    let pause = move |_| command.update(|c| *c = if *c == Command::Pause { Command::Run } else { Command::Pause });
    let stop = move |_| command.set(Command::Stop);
    let discard = move |_| {
        if let Some((s, _)) = saved.get_untracked() {
            spawn_local(async move {
                let _ = store::delete(&s.id).await;
                refresh_saved();
            });
        }
    };
    let export_weights = move |_| {
        let Some(id) = sig.run_id.get_untracked().or_else(|| saved.get_untracked().map(|s| s.0.id)) else {
            error.set(Some("Nothing to export yet: no checkpoint has been saved.".into()));
            return;
        };
        spawn_local(async move {
            let result = async {
                let run = store::load(&id).await.map_err(|e| e.to_string())?.ok_or("no saved checkpoint yet")?;
                let bytes = export_model(&run).await?;
                download(&bytes, &format!("{id}-step{}.safetensors", run.step), "application/octet-stream")
            };
            if let Err(e) = result.await {
                error.set(Some(format!("Export failed: {e}")));
            }
        });
    };
    let export_csv = move |_| {
        let name = sig.run_id.get_untracked().unwrap_or_else(|| "run".into());
        if let Err(e) =
            download(sig.curves.get_untracked().to_csv().as_bytes(), &format!("{name}-curves.csv"), "text/csv")
        {
            error.set(Some(format!("Export failed: {e}")));
        }
    };
    let export_json = move |_| {
        let name = sig.run_id.get_untracked().unwrap_or_else(|| "run".into());
        let json = serde_json::to_string_pretty(&sig.curves.get_untracked()).unwrap_or_default();
        if let Err(e) = download(json.as_bytes(), &format!("{name}-curves.json"), "application/json") {
            error.set(Some(format!("Export failed: {e}")));
        }
    };

    let active = Memo::new(move |_| sig.status.with(Status::active));
    // A folder (or several, or loose images) dropped on the data panel.
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        let Some(dt) = ev.data_transfer() else { return };
        if active.get_untracked() {
            folder_note.set("a run is active: stop it before changing its data".into());
            return;
        }
        let items = crate::browser::dropped(&dt);
        // one dropped folder is the root (`ROOT/CLASS/IMAGE`); several folders are classes
        let one_folder = items.len() == 1 && items[0].as_ref().is_ok_and(|e| e.is_directory());
        sig.form.update(|f| f.data = DataChoice::Folder(String::new()));
        spawn_local(async move {
            match crate::browser::dropped_files(items).await {
                Ok(files) if files.is_empty() => folder_note.set("the drop held no files".into()),
                Ok(files) if one_folder => load_folder(files),
                Ok(files) => load_folder(files.into_iter().map(|(p, f)| (format!("dropped items/{p}"), f)).collect()),
                Err(e) => folder_note.set(format!("could not read the drop: {e}")),
            }
        });
    };
    let loss_chart =
        Signal::derive(move || sig.curves.with(|c| chart("Loss", "loss", vec![series("loss", ACCENT, &c.loss)], None)));
    let lr_chart =
        Signal::derive(move || sig.curves.with(|c| chart("Learning rate", "lr", vec![series("lr", INK, &c.lr)], None)));
    let ips_chart = Signal::derive(move || {
        sig.curves.with(|c| chart("Speed", "images/s", vec![series("images/s", INK, &c.images_per_s)], None))
    });
    let acc_chart = Signal::derive(move || {
        sig.curves.with(|c| {
            let unlabelled = sig.form.with(|f| f.data == DataChoice::Photos);
            chart(
                if unlabelled {
                    "Held-out accuracy: none (the photos have no labels)"
                } else {
                    "Held-out accuracy (top-1, %)"
                },
                "%",
                {
                    let mut s = vec![series("kNN", GREEN, &c.knn), series("linear probe", ACCENT, &c.linear)];
                    if !c.classifier.is_empty() {
                        s.push(series("classifier", INK, &c.classifier));
                    }
                    s
                },
                Some((0.0, 100.0)),
            )
        })
    });
    let set = move |f: fn(&mut TrainForm, &str), v: String| sig.form.update(|form| f(form, &v));
    let field =
        move |label: &'static str, testid: &'static str, get: fn(&TrainForm) -> String, f: fn(&mut TrainForm, &str)| {
            view! {
                <label class="setting">
                    {label}
                    <input
                        type="text"
                        inputmode="decimal"
                        size=if testid == "train-lr" { "16" } else { "6" }
                        data-testid=testid
                        prop:value=move || sig.form.with(get)
                        prop:disabled=move || active.get()
                        on:change=move |ev| set(f, event_target_value(&ev))
                    />
                </label>
            }
        };

    view! {
        <section class="panel train" data-testid="page-train">
            <h2>"Train"</h2>
            <p class="note">
                "Train a ViT in this tab (or a Swin, for the supervised baseline) on the bundled Fashion-MNIST subset (2 000 training, 1 000 held-out test images), the bundled photos, or a folder of your own images (one subfolder per class; pick it or drop it on the settings; nothing leaves your machine). "
                "Every few steps the backbone's pooled features (the ViT's [CLS] token, Swin's mean token) are scored on the held-out images with DINO's weighted kNN (k = 20, T = 0.07) and a linear probe. "
                "Checkpoints go to this browser's storage: reload the page and the run can be resumed with its curves."
            </p>
            <Show when=move || saved.with(Option::is_some) && !active.get()>
                <div class="resume-offer" data-testid="resume-offer">
                    {move || {
                        saved
                            .get()
                            .map(|(s, form)| {
                                let finished = form.as_ref().is_some_and(|f| s.step >= f.steps);
                                let what = form
                                    .map(|f| {
                                        let swin = if f.backbone == BackboneKind::Swin { " Swin" } else { "" };
                                        format!("{} · {}{swin} · step {} of {}", f.method.info().title, f.preset.slug(), s.step, f.steps)
                                    })
                                    .unwrap_or_else(|| format!("step {}", s.step));
                                let kind = if finished { "The last run, finished" } else { "A saved run" };
                                format!("{kind}: {} ({}, {:.1} MB).", what, s.id, s.bytes as f64 / 1e6)
                            })
                    }}
                    " "
                    <Show when=move || {
                        saved.with(|s| s.as_ref().is_some_and(|(s, f)| f.as_ref().is_none_or(|f| s.step < f.steps)))
                    }>
                        <button data-testid="resume-button" on:click=resume_saved>"Resume it"</button>
                    </Show>
                    " "
                    <button data-testid="discard-button" on:click=discard>"Discard"</button>
                </div>
            </Show>
            <div
                class="train-form"
                data-testid="train-form"
                on:dragover=|ev: leptos::ev::DragEvent| ev.prevent_default()
                on:drop=on_drop
            >
                <label class="setting">
                    "Method "
                    <select
                        data-testid="train-method"
                        prop:disabled=move || active.get()
                        on:change=move |ev| {
                            if let Some(m) = Method::parse(&event_target_value(&ev)) {
                                sig.form.update(|f| {
                                    f.method = m;
                                    if !f.backbone.trains(m) {
                                        f.backbone = BackboneKind::Vit;
                                    }
                                });
                            }
                        }
                    >
                        {METHODS
                            .iter()
                            .map(|m| {
                                view! {
                                    <option value=m.name title=m.summary selected=move || sig.form.with(|f| f.method == m.method)>
                                        {m.title}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </label>
                <label class="setting">
                    "Backbone "
                    <select
                        data-testid="train-backbone"
                        prop:disabled=move || active.get()
                        on:change=move |ev| {
                            if let Some(b) = BackboneKind::parse(&event_target_value(&ev)) {
                                sig.form.update(|f| {
                                    f.backbone = b;
                                    if b == BackboneKind::Swin {
                                        f.fine_tune_from = None;
                                    }
                                });
                            }
                        }
                    >
                        {BackboneKind::ALL
                            .map(|b| {
                                let why = if b == BackboneKind::Swin {
                                    "Swin: shifted windows in two stages; here for the supervised baseline (MAE, DINO and iBOT train a ViT)"
                                } else {
                                    "ViT: one grid of patches and a class token"
                                };
                                view! {
                                    <option
                                        value=b.name()
                                        title=why
                                        selected=move || sig.form.with(|f| f.backbone == b)
                                        prop:disabled=move || sig.form.with(|f| !b.trains(f.method))
                                    >
                                        {b.title()}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </label>
                <label class="setting">
                    "Size "
                    <select data-testid="train-preset" prop:disabled=move || active.get() on:change=move |ev| {
                        if let Some(p) = Preset::parse(&event_target_value(&ev)) {
                            sig.form.update(|f| f.preset = p);
                        }
                    }>
                        {Preset::ALL
                            .map(|p| {
                                view! {
                                    <option value=p.slug() selected=move || sig.form.with(|f| f.preset == p)>
                                        {move || sig.form.with(|f| p.label_for(&f.data, f.backbone))}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </label>
                <Show when=move || sig.form.with(|f| f.method == Method::Supervised && f.backbone == BackboneKind::Vit)>
                    <label class="setting">
                        "Start from "
                        <select
                            data-testid="train-fine-tune"
                            prop:disabled=move || active.get()
                            on:change=move |ev| {
                                let v = event_target_value(&ev);
                                sig.form.update(|f| f.fine_tune_from = (!v.is_empty()).then_some(v));
                            }
                        >
                            <option value="">"random weights (supervised baseline)"</option>
                            {move || {
                                bundled
                                    .get()
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|(name, method)| {
                                        let selected = {
                                            let name = name.clone();
                                            move || sig.form.with(|f| f.fine_tune_from.as_deref() == Some(name.as_str()))
                                        };
                                        view! {
                                            <option value=name.clone() selected=selected>
                                                {format!("fine-tune {name} ({method})")}
                                            </option>
                                        }
                                    })
                                    .collect_view()
                            }}
                        </select>
                    </label>
                </Show>
                <label class="setting">
                    "Data "
                    <select
                        data-testid="train-data"
                        prop:disabled=move || active.get()
                        on:change=move |ev| {
                            let v = event_target_value(&ev);
                            sig.form.update(|f| {
                                f.data = match (v.as_str(), folder.get_untracked()) {
                                    ("folder", Some((name, _, _))) => DataChoice::Folder(name),
                                    ("folder", None) => DataChoice::Folder(String::new()),
                                    ("photos", _) => DataChoice::Photos,
                                    _ => DataChoice::Fashion,
                                }
                            });
                        }
                    >
                        <option value="fashion" selected=move || sig.form.with(|f| f.data == DataChoice::Fashion)>
                            "Fashion-MNIST (bundled subset)"
                        </option>
                        <option value="photos" selected=move || sig.form.with(|f| f.data == DataChoice::Photos)>
                            "the bundled photos (16, colour, unlabelled)"
                        </option>
                        <option value="folder" selected=move || sig.form.with(|f| matches!(f.data, DataChoice::Folder(_)))>
                            "your images (a folder, CLASS/IMAGE inside)"
                        </option>
                    </select>
                </label>
                <Show when=move || sig.form.with(|f| matches!(f.data, DataChoice::Folder(_)))>
                    <label class="setting">
                        "Folder "
                        <input
                            type="file"
                            data-testid="train-folder"
                            prop:webkitdirectory=true
                            multiple=true
                            prop:disabled=move || active.get()
                            on:change=on_folder
                        />
                        " or drop the folder on this panel"
                    </label>
                    <span class="note" data-testid="train-folder-note">{move || folder_note.get()}</span>
                </Show>
                {field("Steps ", "train-steps", |f| f.steps.to_string(), |f, v| f.steps = v.trim().parse().unwrap_or(0))}
                {field("Batch ", "train-batch", |f| f.batch.to_string(), |f, v| f.batch = v.trim().parse().unwrap_or(0))}
                {field(
                    "Learning rate ",
                    "train-lr",
                    |f| f.lr.map(|v| v.to_string()).unwrap_or_else(|| format!("{} (default)", f.schedule().lr)),
                    |f, v| f.lr = v.trim().split(' ').next().and_then(|v| v.parse().ok()).filter(|v: &f32| *v != f.schedule_default_lr()),
                )}
                {field("Evaluate every ", "train-eval-every", |f| f.eval_every.to_string(), |f, v| f.eval_every = v.trim().parse().unwrap_or(0))}
                {field("Checkpoint every ", "train-ckpt-every", |f| f.checkpoint_every.to_string(), |f, v| f.checkpoint_every = v.trim().parse().unwrap_or(0))}
                {field("Seed ", "train-seed", |f| f.seed.to_string(), |f, v| f.seed = v.trim().parse().unwrap_or(0))}
            </div>
            <div class="train-controls">
                <button data-testid="train-start" prop:disabled=move || active.get() on:click=start_new>"Start"</button>
                <button data-testid="train-pause" prop:disabled=move || !active.get() on:click=pause>
                    {move || if sig.status.get() == Status::Paused { "Resume" } else { "Pause" }}
                </button>
                <button data-testid="train-stop" prop:disabled=move || !active.get() on:click=stop>"Stop"</button>
                <span class="status" data-testid="train-status" data-state=move || match sig.status.get() {
                    Status::Idle => "idle",
                    Status::Working(_) | Status::Running => "running",
                    Status::Paused => "paused",
                    Status::Stopped(_) => "stopped",
                    Status::Finished(_) => "finished",
                    Status::Failed(_) => "failed",
                }>
                    {move || match sig.status.get() {
                        Status::Idle => "Not started.".to_string(),
                        Status::Working(w) => w,
                        Status::Running => "Training…".into(),
                        Status::Paused => "Paused.".into(),
                        Status::Stopped(m) => format!("Stopped: {m}."),
                        Status::Finished(m) => format!("Done: {m}."),
                        Status::Failed(m) => format!("Training stopped: {m}"),
                    }}
                </span>
            </div>
            <p class="progress" data-testid="train-progress" data-step=move || sig.progress.with(|p| p.step.to_string())>
                {move || {
                    let p = sig.progress.get();
                    if p.steps == 0 {
                        return String::new();
                    }
                    let ckpt = p.last_checkpoint.map_or("none yet".into(), |k| format!("step {k}"));
                    format!(
                        "step {} of {} · {:.0} images/s · ETA {} · last checkpoint: {}",
                        p.step, p.steps, p.images_per_s, seconds(p.eta_s), ckpt
                    )
                }}
            </p>
            <Show when=move || error.with(Option::is_some)>
                <p class="error" data-testid="train-error">{move || error.get()}</p>
            </Show>
            <div class="charts">
                <LineChart spec=loss_chart testid="chart-loss" width=440 height=240 />
                <LineChart spec=acc_chart testid="chart-accuracy" width=440 height=240 />
                <LineChart spec=lr_chart testid="chart-lr" width=300 height=180 />
                <LineChart spec=ips_chart testid="chart-ips" width=300 height=180 />
            </div>
            <Show when=move || sig.recon.with(Option::is_some)>
                <figure class="recon-live" data-testid="train-recon">
                    {move || {
                        sig.recon.get().map(|(_, picture)| view! { <PixelCanvas picture testid="train-recon-grid" label="MAE reconstructions" /> })
                    }}
                    <figcaption>
                        {move || {
                            sig.recon.with(|r| {
                                r.as_ref().map_or(String::new(), |(step, _)| {
                                    format!(
                                        "Step {step}: held-out images (the first four at most) with the same 75% of patches hidden each time. Columns: masked input, reconstruction, reconstruction with the visible patches pasted back, original."
                                    )
                                })
                            })
                        }}
                    </figcaption>
                </figure>
            </Show>
            <Show when=move || sig.confusion.with(Option::is_some)>
                <ConfusionMatrix confusion=sig.confusion />
            </Show>
            <div class="exports">
                <button data-testid="export-weights" on:click=export_weights>"Download weights (.safetensors, timm names)"</button>
                " "
                <button data-testid="export-csv" on:click=export_csv>"Curves as CSV"</button>
                " "
                <button data-testid="export-json" on:click=export_json>"Curves as JSON"</button>
            </div>
        </section>
    }
}

/// The classifier's confusion matrix: rows are the true classes, columns the predicted
/// ones; each cell is shaded by its share of the row.
#[component]
fn ConfusionMatrix(confusion: RwSignal<Option<super::Confusion>>) -> impl IntoView {
    move || {
        confusion.get().map(|(step, m, names)| {
            let total: u32 = m.iter().flatten().sum();
            let right: u32 = (0..m.len()).map(|k| m[k][k]).sum();
            let name = |k: usize| names.get(k).cloned().unwrap_or_else(|| "?".into());
            view! {
                <figure class="confusion" data-testid="train-confusion">
                    <table>
                        <tr>
                            <th>"true \\ predicted"</th>
                            {(0..m.len()).map(|k| view! { <th title=name(k)>{name(k).chars().take(5).collect::<String>()}</th> }).collect_view()}
                        </tr>
                        {m.iter()
                            .enumerate()
                            .map(|(t, row)| {
                                let n = row.iter().sum::<u32>().max(1) as f64;
                                view! {
                                    <tr>
                                        <th>{name(t)}</th>
                                        {row.iter()
                                            .map(|&c| {
                                                let a = c as f64 / n;
                                                let style = format!("background: rgba(42, 157, 143, {a:.2})");
                                                view! { <td style=style>{c}</td> }
                                            })
                                            .collect_view()}
                                    </tr>
                                }
                            })
                            .collect_view()}
                    </table>
                    <figcaption>
                        {format!(
                            "Confusion matrix at step {step}: {right} of {total} held-out images right ({:.1}%). Rows: true class; columns: predicted.",
                            right as f64 * 100.0 / total.max(1) as f64
                        )}
                    </figcaption>
                </figure>
            }
        })
    }
}
