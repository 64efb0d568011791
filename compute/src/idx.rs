//! The idx format of MNIST and Fashion-MNIST (big-endian u32 header, then u8 values), read
//! from bytes so the CLI (files) and the browser (fetched assets) share it.

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

fn be_u32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Parse idx3 (images, `[n, rows, cols]` u8) bytes: `(n, rows, cols, pixels)`.
pub fn parse_images(b: &[u8]) -> Result<(usize, usize, usize, &[u8]), String> {
    if b.len() < 16 || be_u32(b, 0) != 0x0803 {
        return Err("not an idx3-ubyte image file (magic 0x00000803)".into());
    }
    let (n, rows, cols) = (be_u32(b, 4), be_u32(b, 8), be_u32(b, 12));
    if b.len() < 16 + n * rows * cols {
        return Err(format!(
            "idx image file is truncated: {n} images of {rows}×{cols} need {} bytes",
            16 + n * rows * cols
        ));
    }
    Ok((n, rows, cols, &b[16..16 + n * rows * cols]))
}

/// Parse idx1 (labels, `[n]` u8) bytes.
pub fn parse_labels(b: &[u8]) -> Result<Vec<u32>, String> {
    if b.len() < 8 || be_u32(b, 0) != 0x0801 {
        return Err("not an idx1-ubyte label file (magic 0x00000801)".into());
    }
    let n = be_u32(b, 4);
    if b.len() < 8 + n {
        return Err("idx label file is truncated".into());
    }
    Ok(b[8..8 + n].iter().map(|&l| l as u32).collect())
}
