//! Patchwork in the browser. `main.rs` only mounts [`App`]; each component lives in its own
//! file, and [`probe`] is the one module that touches the GPU.
pub mod app;
pub mod device_panel;
pub mod probe;

pub use app::App;
