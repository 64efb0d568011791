//! The few browser calls the pages need, as plain async functions: fetch a file, decode an
//! image off the main thread (`createImageBitmap`, with the browser's own downscaling for
//! large images), draw pixels on a 2D canvas, and save a picture as PNG.
use wasm_bindgen::{Clamped, JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::reconstruct::Picture;

/// Decoded images are kept at most this many pixels on their shorter side; the browser
/// downsizes larger ones while decoding, so a 6000×4000 JPEG never reaches our code whole.
pub const MAX_SIDE: u32 = 512;

fn window() -> Result<web_sys::Window, String> {
    web_sys::window().ok_or_else(|| "no window".to_string())
}

fn js_error(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn fetch(url: &str) -> Result<web_sys::Response, String> {
    let resp: web_sys::Response =
        JsFuture::from(window()?.fetch_with_str(url)).await.map_err(js_error)?.unchecked_into();
    if !resp.ok() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    Ok(resp)
}

pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(fetch(url).await?.array_buffer().map_err(js_error)?).await.map_err(js_error)?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// A file's bytes (a model picked from disk).
pub async fn blob_bytes(blob: &web_sys::Blob) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(blob.array_buffer()).await.map_err(js_error)?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// The bundled models, from `models.txt` (written by Trunk's post-build hook): one
/// `NAME.safetensors METHOD` per line (the method may be missing): `(name, method)`.
pub fn parse_models_list(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().filter(|n| n.ends_with(".safetensors"))?;
            Some((name.to_string(), parts.next().unwrap_or("").to_string()))
        })
        .collect()
}

pub async fn fetch_text(url: &str) -> Result<String, String> {
    let text = JsFuture::from(fetch(url).await?.text().map_err(js_error)?).await.map_err(js_error)?;
    text.as_string().ok_or_else(|| format!("{url}: not text"))
}

pub async fn fetch_blob(url: &str) -> Result<web_sys::Blob, String> {
    Ok(JsFuture::from(fetch(url).await?.blob().map_err(js_error)?).await.map_err(js_error)?.unchecked_into())
}

/// Decode an image file (any format the browser reads; alpha and grey included) into RGBA,
/// its shorter side at most [`MAX_SIDE`]. `name` is only for the messages.
pub async fn decode_image(blob: &web_sys::Blob, name: &str) -> Result<Picture, String> {
    if blob.size() == 0.0 {
        return Err(format!("“{name}” is empty (0 bytes), not an image."));
    }
    let not_image = |why: String| {
        format!("“{name}” is not an image this browser can decode: it may be damaged, cut short, or another kind of file. ({})", why.trim_end_matches('.'))
    };
    let w = window()?;
    let promise = w.create_image_bitmap_with_blob(blob).map_err(|e| not_image(js_error(e)))?;
    let mut bitmap: web_sys::ImageBitmap =
        JsFuture::from(promise).await.map_err(|e| not_image(js_error(e)))?.unchecked_into();
    let (bw, bh) = (bitmap.width(), bitmap.height());
    if bw == 0 || bh == 0 {
        return Err(not_image("no pixels".into()));
    }
    let side = bw.min(bh);
    if side > MAX_SIDE {
        let scale = f64::from(MAX_SIDE) / f64::from(side);
        let opts = web_sys::ImageBitmapOptions::new();
        opts.set_resize_width(((f64::from(bw) * scale).round() as u32).max(1));
        opts.set_resize_height(((f64::from(bh) * scale).round() as u32).max(1));
        opts.set_resize_quality(web_sys::ResizeQuality::High);
        let promise =
            w.create_image_bitmap_with_image_bitmap_and_image_bitmap_options(&bitmap, &opts).map_err(js_error)?;
        let small: web_sys::ImageBitmap = JsFuture::from(promise).await.map_err(js_error)?.unchecked_into();
        bitmap.close();
        bitmap = small;
    }
    let (width, height) = (bitmap.width(), bitmap.height());
    let canvas = new_canvas(width, height)?;
    let ctx = context(&canvas)?;
    ctx.draw_image_with_image_bitmap(&bitmap, 0.0, 0.0).map_err(js_error)?;
    bitmap.close();
    let data = ctx.get_image_data(0.0, 0.0, f64::from(width), f64::from(height)).map_err(js_error)?;
    Ok(Picture::new(width, height, data.data().0))
}

fn new_canvas(width: u32, height: u32) -> Result<web_sys::HtmlCanvasElement, String> {
    let doc = window()?.document().ok_or("no document")?;
    let canvas: web_sys::HtmlCanvasElement = doc.create_element("canvas").map_err(js_error)?.unchecked_into();
    canvas.set_width(width);
    canvas.set_height(height);
    Ok(canvas)
}

fn context(canvas: &web_sys::HtmlCanvasElement) -> Result<web_sys::CanvasRenderingContext2d, String> {
    Ok(canvas.get_context("2d").map_err(js_error)?.ok_or("no 2D context")?.unchecked_into())
}

/// Paint `pic` onto `canvas`, resizing the canvas to fit.
pub fn draw(canvas: &web_sys::HtmlCanvasElement, pic: &Picture) -> Result<(), String> {
    canvas.set_width(pic.width);
    canvas.set_height(pic.height);
    let data = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&pic.rgba), pic.width, pic.height)
        .map_err(js_error)?;
    context(canvas)?.put_image_data(&data, 0.0, 0.0).map_err(js_error)
}

/// Offer `pic` as a PNG download named `file_name`.
pub fn download_png(pic: &Picture, file_name: &str) -> Result<(), String> {
    let canvas = new_canvas(pic.width, pic.height)?;
    draw(&canvas, pic)?;
    let url = canvas.to_data_url_with_type("image/png").map_err(js_error)?;
    let doc = window()?.document().ok_or("no document")?;
    let a: web_sys::HtmlAnchorElement = doc.create_element("a").map_err(js_error)?.unchecked_into();
    a.set_href(&url);
    a.set_download(file_name);
    a.click();
    Ok(())
}

/// What a drop holds, taken while the drop event runs (its `DataTransfer` is emptied after):
/// an entry per dropped item (`webkitGetAsEntry`, so folders can be walked), or the plain
/// file where the browser gives no entry.
pub fn dropped(dt: &web_sys::DataTransfer) -> Vec<Result<web_sys::FileSystemEntry, web_sys::File>> {
    let items = dt.items();
    (0..items.length())
        .filter_map(|i| items.get(i))
        .filter(|item| item.kind() == "file")
        .filter_map(|item| match item.webkit_get_as_entry() {
            Ok(Some(entry)) => Some(Ok(entry)),
            _ => item.get_as_file().ok().flatten().map(Err),
        })
        .collect()
}

/// Every file of a drop with its path (`FOLDER/CLASS/IMAGE` for a dropped folder, as the
/// folder picker's `webkitRelativePath`; the name alone for a dropped file), folders walked
/// to any depth, sorted by path.
pub async fn dropped_files(
    items: Vec<Result<web_sys::FileSystemEntry, web_sys::File>>,
) -> Result<Vec<(String, web_sys::File)>, String> {
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for item in items {
        match item {
            Ok(entry) => stack.push(entry),
            Err(file) => out.push((file.name(), file)),
        }
    }
    while let Some(entry) = stack.pop() {
        if entry.is_directory() {
            let reader = entry.unchecked_ref::<web_sys::FileSystemDirectoryEntry>().create_reader();
            // `readEntries` hands out a directory in batches until one comes back empty
            loop {
                let batch: js_sys::Array = callback_promise(|ok, err| {
                    reader.read_entries_with_callback_and_callback(ok, err).map_err(js_error)
                })
                .await?
                .unchecked_into();
                if batch.length() == 0 {
                    break;
                }
                stack.extend(batch.iter().map(|e| e.unchecked_into::<web_sys::FileSystemEntry>()));
            }
        } else if entry.is_file() {
            let file_entry = entry.unchecked_ref::<web_sys::FileSystemFileEntry>();
            let file: web_sys::File = callback_promise(|ok, err| {
                file_entry.file_with_callback_and_callback(ok, err);
                Ok(())
            })
            .await?
            .unchecked_into();
            out.push((entry.full_path().trim_start_matches('/').to_string(), file));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A callback-style browser call as a future: `call(on_success, on_error)`.
async fn callback_promise(
    call: impl FnOnce(&js_sys::Function, &js_sys::Function) -> Result<(), String>,
) -> Result<JsValue, String> {
    let mut outcome = Ok(());
    let mut call = Some(call);
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        if let Some(call) = call.take() {
            outcome = call(&resolve, &reject);
        }
    });
    outcome?;
    JsFuture::from(promise).await.map_err(js_error)
}
