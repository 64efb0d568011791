//! The GPU backend: every [`Backend`](crate::Backend) op is a WGSL compute shader
//! (`shaders/<op>.wgsl`) launched from its op file (`ops/<op>.rs`) through [`Gpu`].
//!
//! # Getting a device, using a device
//! [`Gpu::new`] asks wgpu for a high-performance adapter and a device with the adapter's
//! own limits; [`Gpu::from_device`] wraps a device someone else made (the app, or tests
//! sharing one device). Everything after that only uses the device.
//!
//! # Recording, and the single submit
//! An op does not run when called: it records a compute pass into the *current command
//! encoder*, created on first use. [`Backend::flush`](crate::Backend::flush) and
//! [`Backend::read`](crate::Backend::read) submit that encoder, so a training step that
//! reads its loss once is one `queue.submit`. Copies and clears are recorded into the same
//! encoder, so they stay in order with the kernels around them.
//!
//! # The uniform arena
//! Each dispatch has a small `Params` uniform (shapes, scalars) at binding 0. Instead of a
//! buffer per dispatch, the params of one encoder are packed into an arena (offsets
//! aligned to `min_uniform_buffer_offset_alignment`) kept on the CPU while recording and
//! written with one `queue.write_buffer` just before the submit; the bind group points at
//! the dispatch's slice. The arena's buffers live as long as the [`Gpu`] (a step with more
//! dispatches than one arena buffer holds spills into a second; they are reused).
//!
//! # The buffer pool
//! [`GpuBuf`] is a cheap, reference-counted handle to pooled memory with its length in
//! words. When its last clone drops, the buffer goes back to the pool, sorted by size
//! class — but while an encoder is being recorded, only *after that encoder is
//! submitted*: commands already recorded may still name it, and `queue.write_buffer`
//! (used by uploads) runs before the encoder's commands, so recycling it within the
//! encoder could overwrite data that a recorded kernel has not read yet. Buffers dropped
//! between a submit and the next recorded op are free at once. After one warm-up step, a
//! step allocates nothing ([`GpuStats::buffers_created`] stays flat).
//! Fresh buffers are zeroed by wgpu; recycled ones get an `encoder.clear_buffer`, so
//! [`alloc`](crate::Backend::alloc) always returns zeros.
//!
//! # Reading back
//! [`read`](crate::Backend::read) copies into a mappable staging buffer, submits, and
//! awaits `map_async` through a oneshot channel, which works on the web. Natively nothing
//! drives the callback, so it first calls `device.poll(wait)`; the web never polls.
mod pool;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

pub use pool::GpuBuf;
use pool::{size_class, Pool};

use crate::backend::{AdamW, Backend, Matmul, PatchOrder};
use crate::ops;

/// Why no GPU context could be made.
#[derive(Debug, Clone)]
pub enum GpuError {
    NoAdapter(String),
    Device(String),
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuError::NoAdapter(e) => write!(f, "no GPU adapter: {e}"),
            GpuError::Device(e) => write!(f, "GPU device request failed: {e}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// Counters for the benchmark and for checking that a step reuses its memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    /// Compute dispatches recorded so far.
    pub dispatches: u64,
    /// Command encoders submitted so far.
    pub submits: u64,
    /// Bytes of device memory held by the pool (in use, pending and free), staging included.
    pub pool_bytes: u64,
    /// Of those, bytes free for reuse.
    pub pool_bytes_free: u64,
    /// Pool buffers created so far (flat after warm-up).
    pub buffers_created: u64,
}

/// One WGSL file: its op name (`layernorm`) and source.
#[derive(Clone, Copy)]
pub struct Shader {
    pub op: &'static str,
    pub source: &'static str,
}

/// One entry point of a shader, with values for its `override` constants. Pipelines are
/// cached by `(op, entry, variant)`: one variant must always come with the same constants.
#[derive(Clone, Copy)]
pub struct Kernel<'a> {
    pub shader: Shader,
    pub entry: &'static str,
    pub variant: &'static str,
    pub constants: &'a [(&'static str, f64)],
}

impl Shader {
    pub const fn entry(self, entry: &'static str) -> Kernel<'static> {
        Kernel { shader: self, entry, variant: "", constants: &[] }
    }
}

/// How a buffer is bound, in the order of the shader's bindings 1, 2, ...
#[derive(Clone, Copy)]
pub enum Bind<'a> {
    Read(&'a GpuBuf),
    Write(&'a GpuBuf),
    /// A few zero words, read-only, for an optional binding that is absent.
    Dummy,
}

const ARENA_CHUNK: u64 = 1 << 18;
const STAGING_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

struct ArenaChunk {
    buffer: wgpu::Buffer,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    arena: Vec<ArenaChunk>,
    /// The chunk being filled.
    chunk: usize,
}

/// `(op, entry, variant)`.
type PipelineKey = (&'static str, &'static str, &'static str);

struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pool: Rc<RefCell<Pool>>,
    rec: RefCell<Recorder>,
    modules: RefCell<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: RefCell<HashMap<PipelineKey, Rc<Pipeline>>>,
    staging: RefCell<HashMap<u64, Vec<wgpu::Buffer>>>,
    staging_bytes: Cell<u64>,
    dummy: wgpu::Buffer,
    dispatches: Cell<u64>,
    submits: Cell<u64>,
    /// Set when the device is lost or destroyed: why.
    lost: Arc<Mutex<Option<String>>>,
}

/// A GPU context: device, queue, pool, pipeline cache and the encoder being recorded.
/// Clones share all of it.
#[derive(Clone)]
pub struct Gpu(Rc<Inner>);

impl Gpu {
    /// A high-performance adapter and a device with that adapter's limits.
    pub async fn new() -> Result<Gpu, GpuError> {
        let (device, queue, info) = Self::request_device().await?;
        Ok(Self::from_device(device, queue, info))
    }

    /// The device half of [`Gpu::new`], for callers that keep or share the device.
    pub async fn request_device() -> Result<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo), GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("patchwork"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        Ok((device, queue, adapter.get_info()))
    }

    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, adapter_info: wgpu::AdapterInfo) -> Gpu {
        let limits = device.limits();
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("patchwork.dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        // A lost device (the browser reclaimed it, the driver reset, or `destroy`) is
        // recorded, not fatal: reads return NaN and `Backend::lost` says why. Any other
        // uncaptured error is a bug and panics, as wgpu's default handler does.
        let lost = Arc::new(Mutex::new(None::<String>));
        let on_lost = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut l = on_lost.lock().unwrap_or_else(|e| e.into_inner());
            l.get_or_insert(format!("{reason:?}{}", if msg.is_empty() { String::new() } else { format!(": {msg}") }));
        });
        let on_error = lost.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            if on_error.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                panic!("wgpu error: {e}");
            }
        }));
        Gpu(Rc::new(Inner {
            lost,
            device,
            queue,
            info: adapter_info,
            limits,
            pool: Rc::new(RefCell::new(Pool::default())),
            rec: RefCell::new(Recorder::default()),
            modules: RefCell::new(HashMap::new()),
            pipelines: RefCell::new(HashMap::new()),
            staging: RefCell::new(HashMap::new()),
            staging_bytes: Cell::new(0),
            dummy,
            dispatches: Cell::new(0),
            submits: Cell::new(0),
        }))
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.0.device
    }

    /// Destroy the device (as the browser may at any time): every later read gives NaN and
    /// [`Backend::lost`] says so. For tests of what callers do then.
    pub fn destroy(&self) {
        self.0.lost.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| "the device was destroyed".into());
        self.0.device.destroy();
    }

    fn lost_reason(&self) -> Option<String> {
        self.0.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.0.queue
    }
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.0.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.0.limits
    }

    /// Whether the adapter looks like a software rasteriser (lavapipe, SwiftShader, WARP).
    pub fn is_software(&self) -> bool {
        let name = self.0.info.name.to_lowercase();
        self.0.info.device_type == wgpu::DeviceType::Cpu
            || ["llvmpipe", "lavapipe", "swiftshader", "warp", "basic render"].iter().any(|s| name.contains(s))
    }

    /// One line for logs: name, backend, device type, driver, and a software guess.
    pub fn adapter_summary(&self) -> String {
        let i = &self.0.info;
        let driver = format!("{} {}", i.driver, i.driver_info);
        let driver = driver.trim();
        format!(
            "{} ({:?}, {:?}, driver {}){}",
            i.name,
            i.backend,
            i.device_type,
            if driver.is_empty() { "unknown" } else { driver },
            if self.is_software() { " [software fallback]" } else { "" }
        )
    }

    pub fn stats(&self) -> GpuStats {
        let pool = self.0.pool.borrow();
        GpuStats {
            dispatches: self.0.dispatches.get(),
            submits: self.0.submits.get(),
            pool_bytes: pool.bytes_held + self.0.staging_bytes.get(),
            pool_bytes_free: pool.bytes_free,
            buffers_created: pool.created,
        }
    }
    /// Compute dispatches recorded so far (monotonic).
    pub fn dispatches(&self) -> u64 {
        self.0.dispatches.get()
    }
    /// Command encoders submitted so far (monotonic).
    pub fn submits(&self) -> u64 {
        self.0.submits.get()
    }
    /// Bytes of device memory the pool holds, in use and free.
    pub fn pool_bytes(&self) -> u64 {
        self.stats().pool_bytes
    }
    /// Give free pool buffers back to the driver (after a phase that used more memory).
    pub fn trim(&self) {
        self.0.pool.borrow_mut().trim();
        self.0.staging.borrow_mut().clear();
        self.0.staging_bytes.set(0);
    }

    /// Run `f` on the current encoder, creating it if needed.
    pub(crate) fn encode<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut rec = self.0.rec.borrow_mut();
        let enc = rec.encoder.get_or_insert_with(|| {
            self.0.pool.borrow_mut().recording = true;
            self.0.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        f(enc)
    }

    /// A pooled buffer for `len` words, and whether it was recycled (so not zeroed).
    fn take_buffer(&self, len: usize) -> (wgpu::Buffer, bool) {
        let bytes = size_class(4 * len as u64);
        let mut pool = self.0.pool.borrow_mut();
        match pool.take(bytes) {
            Some(b) => (b, true),
            None => (pool.create(&self.0.device, bytes), false),
        }
    }

    fn handle(&self, buffer: wgpu::Buffer, len: usize) -> GpuBuf {
        GpuBuf::new(buffer, len, self.0.pool.clone())
    }

    /// Upload raw words into a buffer that no recorded command names, so the queue write
    /// (which runs before the current encoder) is safe.
    fn upload_words(&self, words: &[u8], len: usize) -> GpuBuf {
        let (buffer, _) = self.take_buffer(len);
        if !words.is_empty() {
            self.0.queue.write_buffer(&buffer, 0, words);
        }
        self.handle(buffer, len)
    }

    /// Write `params` into the arena; returns the arena buffer, offset and binding size.
    fn push_params(&self, params: &[u8]) -> (wgpu::Buffer, u64, u64) {
        let align = self.0.limits.min_uniform_buffer_offset_alignment as u64;
        let size = (params.len() as u64).next_multiple_of(16).max(16);
        let mut rec = self.0.rec.borrow_mut();
        let rec = &mut *rec;
        loop {
            if rec.chunk == rec.arena.len() {
                let buffer = self.0.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("patchwork.arena"),
                    size: ARENA_CHUNK,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                rec.arena.push(ArenaChunk { buffer, bytes: Vec::with_capacity(ARENA_CHUNK as usize) });
            }
            let chunk = &mut rec.arena[rec.chunk];
            let offset = (chunk.bytes.len() as u64).next_multiple_of(align);
            if offset + size <= ARENA_CHUNK {
                chunk.bytes.resize(offset as usize, 0);
                chunk.bytes.extend_from_slice(params);
                chunk.bytes.resize((offset + size) as usize, 0);
                return (chunk.buffer.clone(), offset, size);
            }
            rec.chunk += 1;
        }
    }

    fn pipeline(&self, k: &Kernel, binds: &[Bind]) -> Rc<Pipeline> {
        let key = (k.shader.op, k.entry, k.variant);
        if let Some(p) = self.0.pipelines.borrow().get(&key) {
            return p.clone();
        }
        let label = if k.variant.is_empty() {
            format!("{}.{}", k.shader.op, k.entry)
        } else {
            format!("{}.{}.{}", k.shader.op, k.entry, k.variant)
        };
        let device = &self.0.device;
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: !matches!(b, Bind::Write(_)) },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let mut modules = self.0.modules.borrow_mut();
        let module = modules.entry(k.shader.op).or_insert_with(|| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(k.shader.op),
                source: wgpu::ShaderSource::Wgsl(k.shader.source.into()),
            })
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module,
            entry_point: Some(k.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: k.constants,
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let p = Rc::new(Pipeline { pipeline, layout });
        self.0.pipelines.borrow_mut().insert(key, p.clone());
        p
    }

    /// Record one dispatch of `k` with `params` at binding 0 and `binds` at 1, 2, ...
    pub fn dispatch<P: bytemuck::Pod>(&self, k: &Kernel, params: &P, binds: &[Bind], groups: [u32; 3]) {
        if groups.contains(&0) {
            return;
        }
        let max = self.0.limits.max_compute_workgroups_per_dimension;
        assert!(
            groups.iter().all(|g| *g <= max),
            "{}.{}: dispatch {groups:?} over the limit {max}",
            k.shader.op,
            k.entry
        );
        let pipe = self.pipeline(k, binds);
        let (arena, offset, size) = self.push_params(bytemuck::bytes_of(params));
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &arena,
                offset,
                size: std::num::NonZeroU64::new(size),
            }),
        }];
        for (i, b) in binds.iter().enumerate() {
            let buffer = match b {
                Bind::Read(x) | Bind::Write(x) => x.raw(),
                Bind::Dummy => &self.0.dummy,
            };
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: buffer.as_entire_binding() });
        }
        let group = self.0.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.layout,
            entries: &entries,
        });
        self.encode(|enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            pass.set_pipeline(&pipe.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        });
        self.0.dispatches.set(self.0.dispatches.get() + 1);
    }

    /// Workgroup counts for `workgroups` groups along one axis, folded into a second axis
    /// past the per-dimension limit. Shaders recover the linear workgroup index as
    /// `wid.x + wid.y * nwg.x`.
    pub fn groups_1d(&self, workgroups: usize) -> [u32; 3] {
        let max = self.0.limits.max_compute_workgroups_per_dimension as usize;
        if workgroups <= max {
            [workgroups as u32, 1, 1]
        } else {
            let y = workgroups.div_ceil(max);
            [workgroups.div_ceil(y) as u32, y as u32, 1]
        }
    }

    /// Submit the current encoder (with its arena) if anything was recorded.
    fn submit(&self) {
        let mut rec = self.0.rec.borrow_mut();
        let Some(encoder) = rec.encoder.take() else {
            return;
        };
        let used = rec.chunk + 1;
        for chunk in rec.arena.iter_mut().take(used) {
            if !chunk.bytes.is_empty() {
                self.0.queue.write_buffer(&chunk.buffer, 0, &chunk.bytes);
                chunk.bytes.clear();
            }
        }
        rec.chunk = 0;
        drop(rec);
        self.0.queue.submit(Some(encoder.finish()));
        self.0.submits.set(self.0.submits.get() + 1);
        self.0.pool.borrow_mut().submitted();
    }

    fn take_staging(&self, bytes: u64) -> wgpu::Buffer {
        if let Some(b) = self.0.staging.borrow_mut().get_mut(&bytes).and_then(|v| v.pop()) {
            return b;
        }
        self.0.staging_bytes.set(self.0.staging_bytes.get() + bytes);
        self.0.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("patchwork.staging"),
            size: bytes,
            usage: STAGING_USAGE,
            mapped_at_creation: false,
        })
    }

    /// Finish the recorded work and return the first `len` words of `buf` as raw bytes.
    pub async fn read_bytes(&self, buf: &GpuBuf, len: usize) -> Vec<u8> {
        assert!(len <= buf.len(), "read of {len} words from a buffer of {}", buf.len());
        if len == 0 {
            self.submit();
            return Vec::new();
        }
        let bytes = 4 * len as u64;
        let staging = self.take_staging(size_class(bytes));
        self.encode(|enc| enc.copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, bytes));
        self.submit();
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        if self.lost_reason().is_some() {
            return bytemuck::cast_slice(&vec![f32::NAN; len]).to_vec();
        }
        #[cfg(not(target_arch = "wasm32"))]
        if let Err(e) = self.0.device.poll(wgpu::PollType::wait_indefinitely()) {
            if self.lost_reason().is_some() {
                return bytemuck::cast_slice(&vec![f32::NAN; len]).to_vec();
            }
            panic!("device.poll failed: {e}");
        }
        if let Err(e) = rx.await.expect("map_async callback dropped") {
            // A read fails only when the device is gone (its lost callback may come later).
            self.0.lost.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| format!("a read failed: {e}"));
            return bytemuck::cast_slice(&vec![f32::NAN; len]).to_vec();
        }
        let out = staging.slice(..bytes).get_mapped_range().expect("mapped range").to_vec();
        staging.unmap();
        self.0.staging.borrow_mut().entry(staging.size()).or_default().push(staging);
        out
    }

    /// [`Backend::read`] for u32 buffers (labels, indices).
    pub async fn read_u32(&self, buf: &GpuBuf) -> Vec<u32> {
        bytemuck::pod_collect_to_vec(&self.read_bytes(buf, buf.len()).await)
    }
}

/// A device for tests: one per process, shared by every test's [`Gpu`] (each test still
/// has its own pool, encoder and pipelines). `None` (with a note) when the machine has
/// no adapter, unless `PATCHWORK_REQUIRE_GPU=1`, which makes that a failure.
#[cfg(not(target_arch = "wasm32"))]
pub fn test_gpu() -> Option<Gpu> {
    use std::sync::OnceLock;
    type Shared = Option<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo)>;
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| match pollster::block_on(Gpu::request_device()) {
        Ok(d) => Ok(Some(d)),
        Err(e @ GpuError::NoAdapter(_)) => {
            if std::env::var("PATCHWORK_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                Err(format!("PATCHWORK_REQUIRE_GPU=1 but {e}"))
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(e.to_string()),
    });
    match shared {
        Ok(Some((device, queue, info))) => Some(Gpu::from_device(device.clone(), queue.clone(), info.clone())),
        Ok(None) => {
            eprintln!("no GPU adapter: skipping");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

impl Backend for Gpu {
    type Buf = GpuBuf;

    fn lost(&self) -> Option<String> {
        self.lost_reason()
    }

    fn name(&self) -> String {
        self.adapter_summary()
    }

    fn alloc(&self, len: usize) -> GpuBuf {
        let (buffer, recycled) = self.take_buffer(len);
        if recycled {
            self.encode(|enc| enc.clear_buffer(&buffer, 0, None));
        }
        self.handle(buffer, len)
    }
    fn upload(&self, data: &[f32]) -> GpuBuf {
        self.upload_words(bytemuck::cast_slice(data), data.len())
    }
    fn upload_u32(&self, data: &[u32]) -> GpuBuf {
        self.upload_words(bytemuck::cast_slice(data), data.len())
    }
    fn write(&self, dst: &GpuBuf, data: &[f32]) {
        assert!(data.len() <= dst.len(), "write of {} words into a buffer of {}", data.len(), dst.len());
        if data.is_empty() {
            return;
        }
        if self.0.rec.borrow().encoder.is_none() {
            // Nothing recorded yet, so the queue write is already in order.
            self.0.queue.write_buffer(dst.raw(), 0, bytemuck::cast_slice(data));
            return;
        }
        let tmp = self.upload(data);
        self.encode(|enc| enc.copy_buffer_to_buffer(tmp.raw(), 0, dst.raw(), 0, 4 * data.len() as u64));
    }
    fn len(&self, buf: &GpuBuf) -> usize {
        buf.len()
    }
    fn fill(&self, buf: &GpuBuf, value: f32) {
        if value.to_bits() == 0 {
            self.encode(|enc| enc.clear_buffer(buf.raw(), 0, None));
        } else {
            self.fill_value(buf, value);
        }
    }
    fn copy(&self, src: &GpuBuf, src_off: usize, dst: &GpuBuf, dst_off: usize, n: usize) {
        assert!(src_off + n <= src.len() && dst_off + n <= dst.len(), "copy out of range");
        if n == 0 {
            return;
        }
        let bytes = 4 * n as u64;
        if src.same(dst) {
            // wgpu refuses copies within one buffer; go through a temporary.
            let tmp = self.alloc_uncleared(n);
            self.encode(|enc| {
                enc.copy_buffer_to_buffer(src.raw(), 4 * src_off as u64, tmp.raw(), 0, bytes);
                enc.copy_buffer_to_buffer(tmp.raw(), 0, dst.raw(), 4 * dst_off as u64, bytes);
            });
        } else {
            self.encode(|enc| {
                enc.copy_buffer_to_buffer(src.raw(), 4 * src_off as u64, dst.raw(), 4 * dst_off as u64, bytes)
            });
        }
    }
    fn flush(&self) {
        self.submit();
    }
    async fn read(&self, buf: &GpuBuf) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.read_bytes(buf, buf.len()).await)
    }

    fn matmul(&self, p: &Matmul, a: &GpuBuf, b: &GpuBuf, bias: Option<&GpuBuf>, c: &GpuBuf) {
        ops::matmul::matmul_gpu(self, p, a, b, bias, c);
    }
    fn sum_rows(&self, x: &GpuBuf, out: &GpuBuf, rows: usize, cols: usize) {
        ops::matmul::sum_rows_gpu(self, x, out, rows, cols);
    }
    fn add(&self, a: &GpuBuf, b: &GpuBuf, out: &GpuBuf, n: usize) {
        ops::matmul::add_gpu(self, a, b, out, n);
    }

    fn layernorm_forward(
        &self,
        x: &GpuBuf,
        weight: &GpuBuf,
        bias: &GpuBuf,
        y: &GpuBuf,
        mean: &GpuBuf,
        rstd: &GpuBuf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) {
        ops::layernorm::layernorm_forward_gpu(self, x, weight, bias, y, mean, rstd, rows, cols, eps);
    }
    fn layernorm_backward(
        &self,
        dy: &GpuBuf,
        x: &GpuBuf,
        weight: &GpuBuf,
        mean: &GpuBuf,
        rstd: &GpuBuf,
        dx: &GpuBuf,
        dweight: &GpuBuf,
        dbias: &GpuBuf,
        rows: usize,
        cols: usize,
    ) {
        ops::layernorm::layernorm_backward_gpu(self, dy, x, weight, mean, rstd, dx, dweight, dbias, rows, cols);
    }

    fn gelu_forward(&self, x: &GpuBuf, y: &GpuBuf, n: usize) {
        ops::gelu::gelu_forward_gpu(self, x, y, n);
    }
    fn gelu_backward(&self, dy: &GpuBuf, x: &GpuBuf, dx: &GpuBuf, n: usize) {
        ops::gelu::gelu_backward_gpu(self, dy, x, dx, n);
    }

    fn softmax_forward(&self, x: &GpuBuf, y: &GpuBuf, rows: usize, cols: usize) {
        ops::softmax::softmax_forward_gpu(self, x, y, rows, cols);
    }
    fn softmax_backward(&self, dy: &GpuBuf, y: &GpuBuf, dx: &GpuBuf, rows: usize, cols: usize) {
        ops::softmax::softmax_backward_gpu(self, dy, y, dx, rows, cols);
    }

    fn patchify_forward(
        &self,
        img: &GpuBuf,
        out: &GpuBuf,
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        p: usize,
        order: PatchOrder,
    ) {
        ops::patchify::patchify_forward_gpu(self, img, out, b, c, h, w, p, order);
    }
    fn patchify_backward(
        &self,
        dout: &GpuBuf,
        dimg: &GpuBuf,
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        p: usize,
        order: PatchOrder,
    ) {
        ops::patchify::patchify_backward_gpu(self, dout, dimg, b, c, h, w, p, order);
    }

    fn cls_pos_forward(&self, patches: &GpuBuf, cls: &GpuBuf, pos: &GpuBuf, x: &GpuBuf, b: usize, l: usize, d: usize) {
        ops::cls_pos::cls_pos_forward_gpu(self, patches, cls, pos, x, b, l, d);
    }
    fn cls_pos_backward(
        &self,
        dx: &GpuBuf,
        dpatches: &GpuBuf,
        dcls: &GpuBuf,
        dpos: Option<&GpuBuf>,
        b: usize,
        l: usize,
        d: usize,
    ) {
        ops::cls_pos::cls_pos_backward_gpu(self, dx, dpatches, dcls, dpos, b, l, d);
    }

    fn cross_entropy_forward(
        &self,
        logits: &GpuBuf,
        labels: &GpuBuf,
        losses: &GpuBuf,
        probs: &GpuBuf,
        rows: usize,
        classes: usize,
    ) {
        ops::cross_entropy::cross_entropy_forward_gpu(self, logits, labels, losses, probs, rows, classes);
    }
    fn cross_entropy_backward(
        &self,
        dloss: &GpuBuf,
        probs: &GpuBuf,
        labels: &GpuBuf,
        dlogits: &GpuBuf,
        rows: usize,
        classes: usize,
    ) {
        ops::cross_entropy::cross_entropy_backward_gpu(self, dloss, probs, labels, dlogits, rows, classes);
    }

    fn mse_forward(&self, pred: &GpuBuf, target: &GpuBuf, losses: &GpuBuf, rows: usize, cols: usize) {
        ops::mse::mse_forward_gpu(self, pred, target, losses, rows, cols);
    }
    fn mse_backward(&self, dloss: &GpuBuf, pred: &GpuBuf, target: &GpuBuf, dpred: &GpuBuf, rows: usize, cols: usize) {
        ops::mse::mse_backward_gpu(self, dloss, pred, target, dpred, rows, cols);
    }

    fn sum_squares(&self, x: &GpuBuf, n: usize, out: &GpuBuf, slot: usize) {
        ops::adamw::sum_squares_gpu(self, x, n, out, slot);
    }
    fn clip_coef(&self, sums: &GpuBuf, count: usize, max_norm: f32, coef: &GpuBuf) {
        ops::adamw::clip_coef_gpu(self, sums, count, max_norm, coef);
    }
    fn adamw(
        &self,
        param: &GpuBuf,
        grad: &GpuBuf,
        m: &GpuBuf,
        v: &GpuBuf,
        coef: Option<&GpuBuf>,
        n: usize,
        hp: &AdamW,
    ) {
        ops::adamw::adamw_gpu(self, param, grad, m, v, coef, n, hp);
    }

    fn gather_rows(&self, src: &GpuBuf, idx: &GpuBuf, fill: Option<&GpuBuf>, dst: &GpuBuf, rows: usize, cols: usize) {
        ops::gather::gather_rows_gpu(self, src, idx, fill, dst, rows, cols);
    }
    fn add_pos(&self, x: &GpuBuf, pos: &GpuBuf, batch: usize, tokens: usize, dim: usize) {
        ops::gather::add_pos_gpu(self, x, pos, batch, tokens, dim);
    }
    fn rel_pos_bias_forward(
        &self,
        scores: &GpuBuf,
        table: &GpuBuf,
        index: &GpuBuf,
        mask: Option<&GpuBuf>,
        windows: usize,
        nw: usize,
        heads: usize,
        n: usize,
    ) {
        ops::rel_pos_bias::rel_pos_bias_forward_gpu(self, scores, table, index, mask, windows, nw, heads, n);
    }
    fn rel_pos_bias_backward(
        &self,
        dscores: &GpuBuf,
        offsets: &GpuBuf,
        entries: &GpuBuf,
        dtable: &GpuBuf,
        windows: usize,
        heads: usize,
        n: usize,
        rows: usize,
    ) {
        ops::rel_pos_bias::rel_pos_bias_backward_gpu(self, dscores, offsets, entries, dtable, windows, heads, n, rows);
    }

    fn l2norm_forward(
        &self,
        x: &GpuBuf,
        gain: Option<&GpuBuf>,
        y: &GpuBuf,
        norm: &GpuBuf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) {
        ops::l2norm::l2norm_forward_gpu(self, x, gain, y, norm, rows, cols, eps);
    }
    fn l2norm_backward(
        &self,
        dy: &GpuBuf,
        norm: &GpuBuf,
        x: &GpuBuf,
        gain: Option<&GpuBuf>,
        dx: &GpuBuf,
        dgain: Option<&GpuBuf>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) {
        ops::l2norm::l2norm_backward_gpu(self, dy, norm, x, gain, dx, dgain, rows, cols, eps);
    }

    fn soft_cross_entropy_forward(
        &self,
        logits: &GpuBuf,
        targets: &GpuBuf,
        losses: &GpuBuf,
        probs: &GpuBuf,
        rows: usize,
        cols: usize,
        scale: f32,
    ) {
        ops::soft_cross_entropy::soft_cross_entropy_forward_gpu(
            self, logits, targets, losses, probs, rows, cols, scale,
        );
    }
    fn soft_cross_entropy_backward(
        &self,
        dloss: &GpuBuf,
        probs: &GpuBuf,
        targets: &GpuBuf,
        dlogits: &GpuBuf,
        rows: usize,
        cols: usize,
        scale: f32,
    ) {
        ops::soft_cross_entropy::soft_cross_entropy_backward_gpu(
            self, dloss, probs, targets, dlogits, rows, cols, scale,
        );
    }

    fn center_sharpen(&self, x: &GpuBuf, center: &GpuBuf, q: &GpuBuf, rows: usize, cols: usize, temp: f32) {
        ops::center::center_sharpen_gpu(self, x, center, q, rows, cols, temp);
    }
    fn center_update(&self, x: &GpuBuf, center: &GpuBuf, rows: usize, cols: usize, momentum: f32) {
        ops::center::center_update_gpu(self, x, center, rows, cols, momentum);
    }
}

const FILL: Shader = Shader { op: "fill", source: include_str!("../../../shaders/fill.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FillParams {
    n: u32,
    value: f32,
}

impl Gpu {
    fn fill_value(&self, buf: &GpuBuf, value: f32) {
        let params = FillParams { n: buf.len() as u32, value };
        self.dispatch(&FILL.entry("forward"), &params, &[Bind::Write(buf)], self.groups_1d(buf.len().div_ceil(256)));
    }

    /// Scratch memory whose contents the caller overwrites entirely (no clear).
    pub(crate) fn alloc_uncleared(&self, len: usize) -> GpuBuf {
        let (buffer, _) = self.take_buffer(len);
        self.handle(buffer, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;

    #[test]
    fn a_step_after_warm_up_allocates_nothing_and_submits_once() {
        let Some(gpu) = test_gpu() else { return };
        let n = 1000;
        let x = gpu.upload(&vec![1.0; n]);
        let step = |gpu: &Gpu| {
            let a = gpu.alloc(n);
            gpu.add(&x, &x, &a, n);
            let b = gpu.alloc(n);
            gpu.gelu_forward(&a, &b, n);
            block_on(gpu.read(&b))
        };
        step(&gpu);
        let before = gpu.stats();
        for _ in 0..3 {
            let y = step(&gpu);
            assert!((y[n - 1] - ops::gelu::gelu(2.0)).abs() < 1e-6, "{}", y[n - 1]);
        }
        let after = gpu.stats();
        assert_eq!(after.buffers_created, before.buffers_created, "{before:?} -> {after:?}");
        assert_eq!(after.pool_bytes, before.pool_bytes);
        assert_eq!(after.submits - before.submits, 3);
        assert_eq!(after.dispatches - before.dispatches, 6);
    }

    #[test]
    fn buffers_dropped_while_recording_are_not_reused_before_submit() {
        let Some(gpu) = test_gpu() else { return };
        let n = 300;
        let out1 = gpu.alloc(n);
        {
            let t = gpu.upload(&vec![1.0; n]);
            gpu.add(&t, &t, &out1, n);
        }
        // Same size class: were `t` recycled now, this upload (a queue write, which runs
        // before the encoder) would overwrite it before the add above reads it.
        let t2 = gpu.upload(&vec![10.0; n]);
        let out2 = gpu.alloc(n);
        gpu.add(&t2, &t2, &out2, n);
        assert_eq!(block_on(gpu.read(&out1)), vec![2.0; n]);
        assert_eq!(block_on(gpu.read(&out2)), vec![20.0; n]);
    }

    #[test]
    fn recycled_buffers_are_zeroed_and_writes_stay_in_order() {
        let Some(gpu) = test_gpu() else { return };
        let n = 500;
        let a = gpu.alloc(n);
        gpu.fill(&a, 5.0);
        assert_eq!(block_on(gpu.read(&a)), vec![5.0; n]);
        drop(a);
        gpu.flush();
        let before = gpu.stats().buffers_created;
        let b = gpu.alloc(n);
        assert_eq!(gpu.stats().buffers_created, before, "the freed buffer is reused");
        assert_eq!(block_on(gpu.read(&b)), vec![0.0; n]);

        // write() after a recorded op that reads the buffer must not change what it read.
        let src = gpu.upload(&vec![1.0; n]);
        let out = gpu.alloc(n);
        gpu.add(&src, &src, &out, n);
        gpu.write(&src, &vec![7.0; n]);
        gpu.copy(&src, 0, &src, 1, n - 1);
        assert_eq!(block_on(gpu.read(&out)), vec![2.0; n]);
        assert_eq!(block_on(gpu.read(&src)), vec![7.0; n]);
    }

    #[test]
    fn adapter_summary_names_the_adapter() {
        let Some(gpu) = test_gpu() else { return };
        let s = gpu.adapter_summary();
        println!("{s}");
        assert!(s.contains(&gpu.adapter_info().name), "{s}");
    }
}
