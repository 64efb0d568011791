//! Training methods, one file each, over the shared parts (backbone, heads, losses,
//! optimiser, schedules). Each reads like its paper's pseudo-code.
pub mod dino;
pub mod dino_train;
pub mod ibot_train;
pub mod mae;
pub mod supervised;
