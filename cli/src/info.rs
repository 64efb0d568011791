//! `patchwork info`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<()> {
    println!("cpu backend: available");
    Ok(())
}
