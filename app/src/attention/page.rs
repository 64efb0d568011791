//! The Attention page: pick a ViT and an image (gallery, file, drop, paste) and see where
//! its class token looks in any layer: each head's map over the image, their mean and DINO's
//! mass mask; click a patch to see what that patch looks at.
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use patchwork_compute::attention::{cls_maps, patch_row, MASS};
use patchwork_compute::{AttentionMap, VitConfig};

use super::compute::VitEngine;
use super::{model_input, parse_vit, patch_at, tile, tile_scale, Layer};
use crate::browser;
use crate::engine::{next_tick, BackendKind};
use crate::image_source::ImageSource;
use crate::reconstruct::Picture;
use crate::settings::{in_url, SettingsCtx, RES_MAX};

/// One image's attention in every layer of one model, as the page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// What was computed, in words: the image's and the model's names.
    pub label: String,
    pub patch_size: usize,
    pub grid: [usize; 2],
    /// Tile pixels per input pixel.
    pub scale: u32,
    /// The model's input as it sees it (`img_size`, RGBA).
    pub seen: Picture,
    /// One map per layer, first to last.
    pub maps: Arc<Vec<AttentionMap>>,
}

impl Analysis {
    fn patches(&self) -> usize {
        self.grid[0] * self.grid[1]
    }
    fn tile(&self, layer: Layer, mark: Option<usize>) -> Picture {
        tile(&self.seen, self.patch_size, self.grid, layer, self.scale, mark)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Idle,
    Working,
    Failed(String),
}

/// `backend`: the backend to compute on, once known.
#[component]
pub fn AttentionPage(backend: Signal<Option<BackendKind>>) -> impl IntoView {
    let SettingsCtx(settings) = expect_context();
    let models = LocalResource::new(|| async {
        let list = browser::fetch_text("models.txt").await?;
        Ok::<_, String>(browser::parse_models_list(&list).into_iter().map(|(name, _)| name).collect::<Vec<_>>())
    });
    let model_name = Memo::new(move |_| {
        let chosen = settings.with(|s| s.model.clone());
        let list = models.get().and_then(Result::ok).unwrap_or_default();
        chosen.filter(|m| list.contains(m)).or_else(|| list.first().cloned())
    });
    // A checkpoint from disk wins over the bundled choice until a bundled model is picked.
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
            let (model, file) = match parse_vit(&bytes) {
                Ok(m) => m,
                Err(e) => return Some(Err(format!("{name}: {e}"))),
            };
            Some(VitEngine::load(model, &file, kind).await.map(|e| (name, e)))
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
    let analysis = RwSignal::new(None::<Analysis>);
    let status = RwSignal::new(Status::Idle);
    // the layer picked (`None`: the last), kept in the URL as `&layer=N`
    let layer = in_url(settings, |s| s.layer, |s, l| s.layer = l);
    let mass = RwSignal::new(MASS);
    // the input's side as a multiple of the model's own (finer grids, as DINO draws its maps),
    // kept in the URL as `&res=F`
    let resolution = in_url(settings, |s| s.res, |s, f| s.res = f);
    let query = RwSignal::new(None::<usize>);
    let generation = Rc::new(Cell::new(0u64));

    // One forward per model and image gives every layer; the layer, the threshold and the
    // clicked patch only repaint.
    Effect::new(move |_| {
        let Some(Some(Ok((model, engine)))) = engine.get() else { return };
        let Some((name, pic)) = picture.get() else { return };
        let factor = resolution.get();
        let gen = generation.get() + 1;
        generation.set(gen);
        let generation = generation.clone();
        status.set(Status::Working);
        spawn_local(async move {
            // let "computing…" paint before a long forward on the CPU backend
            next_tick().await;
            if generation.get() != gen {
                return;
            }
            let own = engine.model.cfg.clone();
            let cfg = VitConfig { img_size: own.img_size.map(|s| s * factor), ..own };
            let input = model_input(&pic, &cfg, &engine.model.norm);
            let maps = engine.attention(&input.x, cfg.img_size).await;
            if generation.get() != gen {
                return;
            }
            let maps = match maps {
                Ok(m) => m,
                Err(e) => return status.set(Status::Failed(e)),
            };
            if maps.first().is_none_or(|m| m.cls.is_none()) {
                status.set(Status::Failed("the model has no class token".into()));
                return;
            }
            let grid = cfg.grid();
            query.update(|q| *q = q.filter(|q| *q < grid[0] * grid[1]));
            analysis.set(Some(Analysis {
                label: format!("{name} · {model}"),
                patch_size: cfg.patch_size,
                grid,
                scale: tile_scale(&cfg),
                seen: input.seen,
                maps: Arc::new(maps),
            }));
            status.set(Status::Idle);
        });
    });

    let engine_line = move || match engine.get() {
        None | Some(None) => view! { <p class="muted" data-testid="model-status">"Loading the model…"</p> }.into_any(),
        Some(Some(Err(e))) => view! {
            <div>
                <p class="error" data-testid="model-status">{format!("Model not loaded: {e}")}</p>
                <p class="muted small">
                    "This page reads a ViT: a model from " <code>"patchwork train"</code>
                    " (MAE, DINO, iBOT), or a timm-named state dict such as DINO's official ViT-S/16 "
                    "saved as safetensors (see the README)."
                </p>
            </div>
        }
        .into_any(),
        Some(Some(Ok((name, engine)))) => {
            let (m, c) = (&engine.model, &engine.model.cfg);
            let [gh, gw] = c.grid();
            let text = format!(
                "{name} · ViT {}×{}{} · patches {}×{} ({gh}×{gw}) · width {}, {} layers, {} heads · {} · on the {}",
                c.img_size[0],
                c.img_size[1],
                if c.in_chans == 1 { " grey" } else { " RGB" },
                c.patch_size,
                c.patch_size,
                c.embed_dim,
                c.depth,
                c.num_heads,
                m.source,
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

    view! {
        <section class="panel" data-testid="page-attention">
            <h2>"Attention"</h2>
            <p class="lead">
                "Where does a Vision Transformer look? Each head of each layer spreads the class token's "
                "attention over the image's patches. Pick a model and an image, then a layer; click any "
                "patch to see what that patch looks at."
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
                <label class="button" title="a ViT as safetensors: one patchwork train wrote (MAE, DINO, iBOT), or a timm-named checkpoint such as the official DINO ViT-S/16">
                    "Load a checkpoint…"
                    <input type="file" accept=".safetensors" data-testid="model-file" on:change=on_model_file />
                </label>
                <label title="Run the model on a larger copy of the image: more, smaller patches than it was trained on, its position embeddings interpolated (DINO draws its maps this way)">
                    "Resolution "
                    <select data-testid="resolution-select" on:change=move |ev| {
                        if let Ok(f) = event_target_value(&ev).parse::<usize>() {
                            resolution.set(f.clamp(1, RES_MAX));
                        }
                    }>
                        {move || {
                            let size = match engine.get() {
                                Some(Some(Ok((_, e)))) => Some(e.model.cfg.img_size),
                                _ => None,
                            };
                            (1..=RES_MAX)
                                .map(|f| {
                                    let label = match size {
                                        Some([h, w]) if f == 1 => format!("{w}×{h} px (trained)"),
                                        Some([h, w]) => format!("{}×{} px (×{f})", w * f, h * f),
                                        None => format!("×{f}"),
                                    };
                                    view! { <option value=f.to_string() selected=move || resolution.get() == f>{label}</option> }
                                })
                                .collect_view()
                        }}
                    </select>
                </label>
                {engine_line}
            </div>
            <ImageSource picture error=upload_error />
            {move || model_error.get().map(|e| view! { <p class="error" data-testid="model-error">{e}</p> })}
            {move || upload_error.get().map(|e| view! { <p class="error" data-testid="upload-error">{e}</p> })}
            <p class="muted" data-testid="image-name">
                {move || picture.with(|p| p.as_ref().map(|(n, p)| format!("Image: {n} ({}×{})", p.width, p.height)))}
                " "
                <span data-testid="progress">
                    {move || match status.get() {
                        Status::Idle => String::new(),
                        Status::Working => "computing attention…".into(),
                        Status::Failed(e) => format!("failed: {e}"),
                    }}
                </span>
            </p>
            <AttentionView analysis layer mass query />
            <Explainer />
        </section>
    }
}

/// The layer and threshold controls, the CLS tiles (input, one per head, the mean, the
/// mask), and, once a patch is picked, that patch's own attention per head and mean.
/// `layer`: `None` is the last; `mass`: the mask's share of the attention; `query`: the
/// picked patch (raster index).
#[component]
pub fn AttentionView(
    #[prop(into)] analysis: Signal<Option<Analysis>>,
    layer: RwSignal<Option<usize>>,
    mass: RwSignal<f32>,
    query: RwSignal<Option<usize>>,
) -> impl IntoView {
    let depth = Memo::new(move |_| analysis.with(|a| a.as_ref().map_or(0, |a| a.maps.len())));
    // the layer shown: the one picked, within the model's depth, else the last
    let shown = Memo::new(move |_| {
        let d = depth.get();
        layer.get().filter(|l| *l < d).unwrap_or(d.saturating_sub(1))
    });
    let pick = Callback::new(move |i: usize| query.set(Some(i)));

    let cls_tiles = move || {
        analysis.with(|a| {
            let a = a.as_ref()?;
            let (l, mark) = (a.patches(), query.get());
            let maps = cls_maps(&a.maps[shown.get()], 0, mass.get())?;
            let [gh, gw] = a.grid;
            let pct = (mass.get() * 100.0).round();
            let mut tiles = vec![view! {
                <Tile picture=a.tile(Layer::Image, mark) grid=a.grid testid="tile-input"
                    caption=format!("input as the model sees it ({}×{})", a.seen.width, a.seen.height) pick />
            }];
            for (h, (m, mask)) in maps.heads.iter().zip(&maps.masks).enumerate() {
                let peak = (0..l).max_by(|x, y| m[*x].total_cmp(&m[*y])).unwrap_or(0);
                let kept = mask.iter().filter(|k| **k).count();
                tiles.push(view! {
                    <Tile picture=a.tile(Layer::Heat(m), mark) grid=a.grid testid="tile-head" head=h
                        caption=format!(
                            "head {h}: peak ({}, {}), {pct}% of its mass in {kept}/{l} patches",
                            peak / gw,
                            peak % gw
                        )
                        pick />
                });
            }
            tiles.push(view! {
                <Tile picture=a.tile(Layer::Heat(&maps.mean), mark) grid=a.grid testid="tile-mean"
                    caption=format!("mean of {} heads", maps.heads.len()) pick />
            });
            let kept = maps.mean_mask.iter().filter(|k| **k).count();
            tiles.push(view! {
                <Tile picture=a.tile(Layer::Mask(&maps.mean_mask), mark) grid=a.grid testid="tile-mask"
                    caption=format!("{pct}%-mass mask of the mean: {kept}/{l} patches ({gh}×{gw} grid)") pick />
            });
            Some(tiles)
        })
    };

    let patch_view = move || {
        analysis.with(|a| {
            let a = a.as_ref()?;
            let q = query.get().filter(|q| *q < a.patches())?;
            let (heads, mean) = patch_row(&a.maps[shown.get()], 0, q);
            let gw = a.grid[1];
            let mut tiles: Vec<_> = heads
                .iter()
                .enumerate()
                .map(|(h, m)| {
                    let own = m[q];
                    view! {
                        <Tile picture=a.tile(Layer::Heat(m), Some(q)) grid=a.grid testid="patch-tile-head" head=h
                            caption=format!("head {h} ({:.0}% on itself)", own * 100.0) pick />
                    }
                })
                .collect();
            tiles.push(view! {
                <Tile picture=a.tile(Layer::Heat(&mean), Some(q)) grid=a.grid testid="patch-tile-mean"
                    caption="mean over heads".to_string() pick />
            });
            let to_cls: f32 = 1.0 - mean.iter().sum::<f32>();
            // a model with registers shares the rest between them and the class token
            let rest_to =
                if a.maps[shown.get()].cls_to_registers.is_empty() { "the class token" } else { "the class token and the registers" };
            Some(view! {
                <div class="patch-view" data-testid="patch-view" data-patch=q.to_string()>
                    <h3 data-testid="patch-label">
                        {format!("What patch (row {}, column {}) attends to in layer {}", q / gw, q % gw, shown.get())}
                    </h3>
                    <p class="muted small">
                        {format!(
                            "Its query's attention over every patch (outlined: the patch itself); the {:.1}% left goes to {rest_to}.",
                            to_cls * 100.0
                        )}
                        " "
                        <button data-testid="patch-clear" on:click=move |_| query.set(None)>"Clear"</button>
                    </p>
                    <div class="attn-tiles">{tiles}</div>
                </div>
            })
        })
    };

    view! {
        <div class="controls">
            <label>
                "Layer "
                <select
                    data-testid="layer-select"
                    on:change=move |ev| {
                        if let Ok(l) = event_target_value(&ev).parse::<usize>() {
                            layer.set(Some(l));
                        }
                    }
                >
                    {move || {
                        let d = depth.get();
                        (0..d)
                            .map(|l| {
                                let label = if l + 1 == d { format!("{l} (last)") } else { l.to_string() };
                                view! { <option value=l.to_string() selected=move || shown.get() == l>{label}</option> }
                            })
                            .collect_view()
                    }}
                </select>
            </label>
            <label>
                "Mask keeps "
                <input
                    type="range"
                    data-testid="threshold"
                    min="0.05"
                    max="0.95"
                    step="0.05"
                    prop:value=move || mass.get().to_string()
                    on:input=move |ev| {
                        if let Ok(m) = event_target_value(&ev).parse::<f32>() {
                            mass.set(((m * 100.0).round() / 100.0).clamp(0.05, 0.95));
                        }
                    }
                />
                <strong>{move || format!("{:.0}%", mass.get() * 100.0)}</strong>
                " of the attention"
            </label>
        </div>
        <div
            class="attn-tiles"
            data-testid="attention-tiles"
            data-done-for=move || analysis.with(|a| a.as_ref().map(|a| a.label.clone()).unwrap_or_default())
            data-layer=move || shown.get().to_string()
            data-grid=move || analysis.with(|a| a.as_ref().map(|a| format!("{}×{}", a.grid[0], a.grid[1])).unwrap_or_default())
        >
            {cls_tiles}
        </div>
        {patch_view}
    }
}

/// A tile on a 2D canvas (`putImageData`); a click picks the patch under it.
#[component]
fn Tile(
    picture: Picture,
    grid: [usize; 2],
    testid: &'static str,
    caption: String,
    #[prop(optional)] head: Option<usize>,
    pick: Callback<usize>,
) -> impl IntoView {
    let node = NodeRef::<leptos::html::Canvas>::new();
    let (w, h) = (picture.width, picture.height);
    Effect::new(move |_| {
        if let Some(canvas) = node.get() {
            let _ = browser::draw(&canvas, &picture);
        }
    });
    let on_click = move |ev: leptos::ev::MouseEvent| {
        let Some(canvas) = node.get_untracked() else { return };
        let (cw, ch) = (f64::from(canvas.client_width()), f64::from(canvas.client_height()));
        if let Some(i) = patch_at(f64::from(ev.offset_x()), f64::from(ev.offset_y()), cw, ch, grid) {
            pick.run(i);
        }
    };
    view! {
        <figure class="attn-tile" data-testid=testid data-head=head.map(|h| h.to_string())>
            <canvas node_ref=node width=w height=h on:click=on_click title="click a patch to see what it attends to" />
            <figcaption>{caption}</figcaption>
        </figure>
    }
}

#[component]
fn Explainer() -> impl IntoView {
    view! {
        <details class="explain" data-testid="explainer" open>
            <summary>"What is going on?"</summary>
            <p>
                "A Vision Transformer cuts the image into square patches and adds one extra token, the "
                <em>"class token"</em> " (CLS), whose final state is the model's summary of the whole image. "
                "In every layer each token asks every other token a question: its query is compared with "
                "their keys, and a softmax turns the scores into weights that sum to 1. Those weights are the "
                "attention. A layer has several heads, each with its own queries and keys, so each head can "
                "look for something different."
            </p>
            <p>
                "Each head's tile shows the class token's row of weights, one value per patch, coloured from "
                "dark purple (least) to yellow (most) and scaled to the tile's own range, over a grey copy of "
                "the input. The mean tile averages the heads. Early layers tend to look around locally; the "
                "last layers gather what the summary needs. DINO's paper showed that a ViT trained "
                "without labels ends up with heads whose class-token attention outlines the main object."
            </p>
            <p>
                "The mask is DINO's way to make that visible: sort the patches by attention and keep the "
                "fewest, largest ones that together hold 60% of it (the threshold in "
                <code>"visualize_attention.py"</code>
                "). Kept patches are outlined in red, the rest greyed out. A peaked map keeps a few "
                "patches; a flat one needs many."
            </p>
            <p>
                "A model sees its training size by default. "<em>"Resolution"</em>" runs it on a larger copy of the "
                "image instead: the patches stay the same size in pixels, so there are more of them, and the "
                "position embeddings are interpolated to the new grid as DINO's "
                <code>"interpolate_pos_encoding"</code>" does. DINO draws its famous maps this way (480 px for "
                "models trained at 224), and small objects get more than a handful of patches."
            </p>
            <p>
                "Clicking a patch shows that patch's own row of attention: which patches it takes its next "
                "state from. The bundled DINO and iBOT models were trained to make their class token a "
                "summary of the image; an MAE's loss only scores pixels, so nothing asks its class token to "
                "summarise, and its maps are less tidy. The same maps and numbers come from "
                <code>"patchwork attention --model M --image IMG --out a.png --json [--size N]"</code> "."
            </p>
        </details>
    }
}
