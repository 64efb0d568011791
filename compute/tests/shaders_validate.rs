//! Every `shaders/*.wgsl` parses and validates with naga, whether or not a test dispatches it,
//! so a broken shader fails the suite on the CPU-only machine as well.
use std::path::{Path, PathBuf};

/// What a browser's WebGPU can grant: the core set plus `shader-f16`. A shader that needs more
/// would not run on the web.
fn capabilities() -> naga::valid::Capabilities {
    naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16
}

fn shader_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    files
}

/// Parse and validate one file; `Err` holds naga's own report, with the source line marked.
fn check(path: &Path) -> Result<(), String> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let source = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let module = naga::front::wgsl::parse_str(&source).map_err(|e| e.emit_to_string_with_path(&source, &name))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities())
        .validate(&module)
        .map_err(|e| e.emit_to_string_with_path(&source, &name))?;
    Ok(())
}

#[test]
fn every_shader_parses_and_validates() {
    let files = shader_files();
    if files.is_empty() {
        println!("note: shaders/ holds no .wgsl files yet; nothing to validate");
        return;
    }
    let failures: Vec<String> = files.iter().filter_map(|p| check(p).err()).collect();
    for p in &files {
        println!("checked {}", p.file_name().unwrap().to_string_lossy());
    }
    assert!(failures.is_empty(), "{} of {} shaders failed naga:\n{}", failures.len(), files.len(), failures.join("\n"));
}

#[test]
fn a_broken_shader_is_reported_with_its_name() {
    let dir = std::env::temp_dir().join(format!("patchwork-shaders-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.wgsl");
    // Parses, but fails validation: a u32 stored into an f32 array.
    std::fs::write(
        &path,
        "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
         @compute @workgroup_size(1) fn main() { y[0] = 1u; }\n",
    )
    .unwrap();
    let err = check(&path).expect_err("a mistyped store must not validate");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("broken.wgsl"), "report lacks the file name:\n{err}");
}
