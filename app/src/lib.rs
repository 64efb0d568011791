//! Patchwork in the browser. `main.rs` only mounts [`App`]; each component lives in its own
//! file. [`engine`] (Reconstruct) and [`attention::compute`] (Attention) are the modules
//! that compute (CPU backend or WebGPU) and [`probe`] the one that describes the adapter;
//! components only see the plain structs they publish.
pub mod app;
pub mod attention;
pub mod browser;
pub mod chart;
pub mod device_panel;
pub mod engine;
pub mod image_source;
pub mod probe;
pub mod reconstruct;
pub mod settings;
pub mod store;
pub mod train;

pub use app::App;
