//! The buffer pool: device memory handed out as [`GpuBuf`] handles and taken back when
//! the last handle drops.
//!
//! A dropped buffer may still be named by commands in the encoder being recorded, and
//! `queue.write_buffer` runs *before* that encoder's commands, so a buffer released during
//! recording waits in `pending` and only becomes free once the encoder is submitted. One
//! released while no encoder is open (say, a step's activations dropped after its read)
//! is free at once, so the next step reuses it.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Storage buffers can be bound, cleared, copied from and to.
pub(crate) const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// A handle to `len` words of device memory. Clones share the memory; the last clone to
/// drop returns the buffer to the pool.
#[derive(Clone)]
pub struct GpuBuf(Rc<BufInner>);

struct BufInner {
    buffer: wgpu::Buffer,
    len: usize,
    pool: Rc<RefCell<Pool>>,
}

impl Drop for BufInner {
    fn drop(&mut self) {
        self.pool.borrow_mut().release(self.buffer.clone());
    }
}

impl GpuBuf {
    pub(crate) fn new(buffer: wgpu::Buffer, len: usize, pool: Rc<RefCell<Pool>>) -> Self {
        GpuBuf(Rc::new(BufInner { buffer, len, pool }))
    }
    /// Length in words.
    pub fn len(&self) -> usize {
        self.0.len
    }
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
    /// The underlying buffer (its size is the pool's size class, at least `4 · len` bytes).
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.0.buffer
    }
    /// Whether two handles share memory.
    pub fn same(&self, other: &GpuBuf) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for GpuBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuf({} words)", self.0.len)
    }
}

#[derive(Default)]
pub(crate) struct Pool {
    /// Free buffers by byte size (a size class).
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Released while the current encoder was being recorded; free after its submit.
    pending: Vec<wgpu::Buffer>,
    /// An encoder is open (something was recorded since the last submit).
    pub recording: bool,
    /// Bytes of every buffer the pool has created and not dropped: in use, pending and free.
    pub bytes_held: u64,
    pub bytes_free: u64,
    /// Buffers created so far; flat after warm-up.
    pub created: u64,
}

/// Round a request up so that similar sizes share buffers: 256-byte steps up to 4 KiB,
/// then eighths of the next power of two (at most 12.5 % slack).
pub(crate) fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(16);
    if b <= 4096 {
        return b.next_multiple_of(256);
    }
    b.next_multiple_of(b.next_power_of_two() / 8)
}

impl Pool {
    /// A free buffer of `bytes` (a size class), if one is waiting.
    pub fn take(&mut self, bytes: u64) -> Option<wgpu::Buffer> {
        let b = self.free.get_mut(&bytes)?.pop()?;
        self.bytes_free -= bytes;
        Some(b)
    }

    pub fn create(&mut self, device: &wgpu::Device, bytes: u64) -> wgpu::Buffer {
        self.created += 1;
        self.bytes_held += bytes;
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("patchwork.pool"),
            size: bytes,
            usage: USAGE,
            mapped_at_creation: false,
        })
    }

    fn release(&mut self, buffer: wgpu::Buffer) {
        if self.recording {
            self.pending.push(buffer);
        } else {
            // No recorded command names it, and submitted work precedes any later write.
            self.bytes_free += buffer.size();
            self.free.entry(buffer.size()).or_default().push(buffer);
        }
    }

    /// The encoder that might still name the pending buffers has been submitted.
    pub fn submitted(&mut self) {
        self.recording = false;
        for b in self.pending.drain(..) {
            self.bytes_free += b.size();
            self.free.entry(b.size()).or_default().push(b);
        }
    }

    /// Drop every free buffer (memory goes back to the driver).
    pub fn trim(&mut self) {
        for (_, v) in self.free.drain() {
            for b in v {
                self.bytes_held -= b.size();
                b.destroy();
            }
        }
        self.bytes_free = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_with_little_slack() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(4), 256);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4100), 5120);
        for bytes in [5000u64, 123_457, 10_000_000] {
            let c = size_class(bytes);
            assert!(c >= bytes && (c as f64) <= bytes as f64 * 1.125 + 1.0, "{bytes} -> {c}");
        }
    }
}
