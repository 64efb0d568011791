//! What the URL carries: the page and the settings, as a query string
//! (`?page=reconstruct&backend=cpu&seed=3&ratio=0.6`), so a link reproduces a view.
use leptos::prelude::*;

use crate::engine::BackendKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Reconstruct,
    Attention,
    Train,
}

impl Page {
    pub const ALL: [Page; 3] = [Page::Reconstruct, Page::Attention, Page::Train];
    pub fn slug(self) -> &'static str {
        match self {
            Page::Reconstruct => "reconstruct",
            Page::Attention => "attention",
            Page::Train => "train",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Page::Reconstruct => "Reconstruct",
            Page::Attention => "Attention",
            Page::Train => "Train",
        }
    }
}

/// The backend setting: `Auto` takes the faster one for the adapter found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendPref {
    Auto,
    Force(BackendKind),
}

impl BackendPref {
    pub fn slug(self) -> &'static str {
        match self {
            BackendPref::Auto => "auto",
            BackendPref::Force(BackendKind::Cpu) => "cpu",
            BackendPref::Force(BackendKind::WebGpu) => "webgpu",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(BackendPref::Auto),
            "cpu" => Some(BackendPref::Force(BackendKind::Cpu)),
            "webgpu" | "gpu" => Some(BackendPref::Force(BackendKind::WebGpu)),
            _ => None,
        }
    }
}

/// Everything the URL holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub page: Page,
    pub backend: BackendPref,
    pub seed: u64,
    /// The slider's mask ratio, the grid's last row.
    pub ratio: f64,
    /// A bundled model file name (`mae-fashion-mnist.safetensors`), or the first one.
    pub model: Option<String>,
    /// The Attention page's layer, from 0; `None` is the last.
    pub layer: Option<usize>,
    /// The Attention page's input side as a multiple of the model's own (1 to [`RES_MAX`]).
    pub res: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            page: Page::Reconstruct,
            backend: BackendPref::Auto,
            seed: 0,
            ratio: 0.6,
            model: None,
            layer: None,
            res: 1,
        }
    }
}

pub const RATIO_MIN: f64 = 0.05;
pub const RATIO_MAX: f64 = 0.95;
/// The largest Attention-page resolution factor offered.
pub const RES_MAX: usize = 3;

impl Settings {
    /// Read a query string (with or without its `?`); unknown or malformed values keep
    /// their defaults.
    pub fn from_query(query: &str) -> Self {
        let mut s = Settings::default();
        for pair in query.trim_start_matches('?').split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "page" => s.page = Page::ALL.into_iter().find(|p| p.slug() == v).unwrap_or(s.page),
                "backend" => s.backend = BackendPref::parse(v).unwrap_or(s.backend),
                "seed" => s.seed = v.parse().unwrap_or(s.seed),
                "ratio" => {
                    s.ratio = v
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite())
                        .map_or(s.ratio, |r| r.clamp(RATIO_MIN, RATIO_MAX))
                }
                "model" if is_plain_name(v) => s.model = Some(v.to_string()),
                "layer" => s.layer = v.parse().ok().or(s.layer),
                "res" => s.res = v.parse().ok().filter(|f| (1..=RES_MAX).contains(f)).unwrap_or(s.res),
                _ => {}
            }
        }
        s
    }

    pub fn to_query(&self) -> String {
        let mut q = format!(
            "?page={}&backend={}&seed={}&ratio={}",
            self.page.slug(),
            self.backend.slug(),
            self.seed,
            self.ratio
        );
        if let Some(m) = &self.model {
            q += &format!("&model={m}");
        }
        if let Some(l) = self.layer {
            q += &format!("&layer={l}");
        }
        if self.res != 1 {
            q += &format!("&res={}", self.res);
        }
        q
    }
}

/// File names only: no path, nothing that needs escaping in a query string.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !s.starts_with('.')
}

/// The settings, shared by the shell and the pages through context. `Copy`.
#[derive(Clone, Copy)]
pub struct SettingsCtx(pub RwSignal<Settings>);

/// Settings from the address bar, kept in step with it (`history.replaceState`).
pub fn from_location() -> RwSignal<Settings> {
    let query = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    let settings = RwSignal::new(Settings::from_query(&query));
    Effect::new(move |_| {
        let q = settings.with(Settings::to_query);
        if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&q));
        }
    });
    settings
}

/// A page's own signal for one setting: it starts from the address, and every change is
/// written back to it (the settings' `Effect` then updates the URL).
pub fn in_url<T: Clone + PartialEq + Send + Sync + 'static>(
    settings: RwSignal<Settings>,
    get: fn(&Settings) -> T,
    set: fn(&mut Settings, T),
) -> RwSignal<T> {
    let value = RwSignal::new(settings.with_untracked(get));
    Effect::new(move |_| {
        let v = value.get();
        if settings.with_untracked(get) != v {
            settings.update(|s| set(s, v));
        }
    });
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trips_and_forces_a_backend() {
        let s =
            Settings::from_query("?page=train&backend=cpu&seed=7&ratio=0.3&model=mae-photos.safetensors&layer=2&res=3");
        assert_eq!((s.layer, s.res), (Some(2), 3));
        assert_eq!(s.page, Page::Train);
        assert_eq!(s.backend, BackendPref::Force(BackendKind::Cpu));
        assert_eq!((s.seed, s.ratio), (7, 0.3));
        assert_eq!(Settings::from_query(&s.to_query()), s);
        assert_eq!(Settings::from_query("backend=webgpu").backend, BackendPref::Force(BackendKind::WebGpu));
    }

    #[test]
    fn bad_values_keep_defaults() {
        let s = Settings::from_query("?page=nope&backend=tpu&seed=-1&ratio=7&model=../x&layer=-1&res=4");
        assert_eq!(s, Settings { ratio: RATIO_MAX, ..Settings::default() });
        assert_eq!(Settings::from_query("res=0").res, 1);
        assert!(!Settings::default().to_query().contains("res="), "the default is left out of the address");
    }
}
