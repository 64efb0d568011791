//! The page's one owner of the GPU: asks the browser for a WebGPU adapter, describes it as
//! plain data and runs the self-check kernel. Components only ever see the structs defined
//! here, never a wgpu handle.
use futures_channel::oneshot;
use wgpu::util::DeviceExt;

/// What the page computes on.
#[derive(Clone, Debug, PartialEq)]
pub enum Device {
    Gpu(GpuInfo),
    /// No usable WebGPU adapter; the reason is the browser's or wgpu's own words.
    Cpu {
        reason: String,
    },
}

/// A WebGPU adapter, as far as the browser tells.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuInfo {
    /// `GPUAdapterInfo.description`; browsers may leave it empty.
    pub name: String,
    /// `GPUAdapterInfo.vendor` and `.architecture` (e.g. "google", "swiftshader"); empty
    /// where the browser keeps them back.
    pub vendor: String,
    pub architecture: String,
    pub backend: String,
    /// A software adapter such as Chromium's SwiftShader. Work defaults to the CPU backend
    /// there, since it is slower than plain Rust on the same cores.
    pub fallback: bool,
    /// The few limits that bound our kernels.
    pub limits: Vec<Limit>,
    /// WebGPU feature names, kebab-case.
    pub features: Vec<String>,
}

/// One adapter limit under its WebGPU name.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub name: &'static str,
    pub value: u64,
    /// Counts bytes, so the page may write it in KiB/MiB/GiB.
    pub bytes: bool,
}

/// The self-check kernel's outcome: `y = 2x + 1` over `n` values, checked on the CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelCheck {
    pub n: usize,
    pub workgroups: u32,
    /// The first few outputs, for the page to show.
    pub head: Vec<f32>,
    /// Index, expected and got of the first wrong value, if any.
    pub first_mismatch: Option<(usize, f32, f32)>,
    pub millis: f64,
}

impl Limit {
    fn count(name: &'static str, value: u32) -> Self {
        Limit { name, value: value.into(), bytes: false }
    }

    fn bytes(name: &'static str, value: u64) -> Self {
        Limit { name, value, bytes: true }
    }
}

impl GpuInfo {
    /// A software adapter: flagged as fallback (`isFallbackAdapter`), or named as one of the
    /// known software rasterisers.
    pub fn is_software(&self) -> bool {
        let text = format!("{} {} {}", self.name, self.vendor, self.architecture).to_lowercase();
        self.fallback
            || ["swiftshader", "llvmpipe", "lavapipe", "warp", "basic render"].iter().any(|s| text.contains(s))
    }
}

impl KernelCheck {
    pub fn ok(&self) -> bool {
        self.first_mismatch.is_none()
    }
}

/// Everything the home page shows about compute.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub device: Device,
    /// `None` without a GPU; `Some(Err)` when the GPU failed to run the kernel.
    pub kernel: Option<Result<KernelCheck, String>>,
}

const SELF_CHECK_WGSL: &str = include_str!("selfcheck.wgsl");
const SELF_CHECK_N: usize = 100;
const SELF_CHECK_WG: u32 = 64;

/// Probe the browser's WebGPU and, when there is an adapter, run the self-check on it.
pub async fn probe() -> Report {
    let (adapter, device, queue) = match gpu().await {
        Ok(gpu) => gpu,
        Err(reason) => return Report { device: Device::Cpu { reason }, kernel: None },
    };
    let mut info = describe(&adapter);
    (info.vendor, info.architecture) = vendor_and_architecture().await;
    let kernel = self_check(&device, &queue).await;
    Report { device: Device::Gpu(info), kernel: Some(kernel) }
}

/// Get a device, kept apart from using it so that tests can bring their own.
pub async fn gpu() -> Result<(wgpu::Adapter, wgpu::Device, wgpu::Queue), String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions::default())
        .await
        .map_err(|e| format!("no WebGPU adapter ({e})"))?;
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor { label: Some("patchwork.app"), ..Default::default() })
        .await
        .map_err(|e| format!("WebGPU adapter refused a device ({e})"))?;
    Ok((adapter, device, queue))
}

pub fn describe(adapter: &wgpu::Adapter) -> GpuInfo {
    let info = adapter.get_info();
    let l = adapter.limits();
    GpuInfo {
        name: info.name,
        vendor: String::new(),
        architecture: String::new(),
        backend: info.backend.to_string(),
        fallback: info.device_type == wgpu::DeviceType::Cpu,
        limits: vec![
            Limit::count("maxComputeWorkgroupSizeX", l.max_compute_workgroup_size_x),
            Limit::count("maxComputeInvocationsPerWorkgroup", l.max_compute_invocations_per_workgroup),
            Limit::bytes("maxComputeWorkgroupStorageSize", l.max_compute_workgroup_storage_size.into()),
            Limit::count("maxComputeWorkgroupsPerDimension", l.max_compute_workgroups_per_dimension),
            Limit::count("maxStorageBuffersPerShaderStage", l.max_storage_buffers_per_shader_stage),
            Limit::bytes("maxStorageBufferBindingSize", l.max_storage_buffer_binding_size),
            Limit::bytes("maxBufferSize", l.max_buffer_size),
        ],
        features: adapter.features().iter_names().map(|(name, _)| name.to_lowercase().replace('_', "-")).collect(),
    }
}

/// wgpu passes on only the description of `GPUAdapterInfo`; vendor and architecture come
/// from asking the browser directly.
#[cfg(target_arch = "wasm32")]
async fn vendor_and_architecture() -> (String, String) {
    use js_sys::{Function, Promise, Reflect};
    use wasm_bindgen::{JsCast, JsValue};

    async fn ask() -> Option<JsValue> {
        let gpu = Reflect::get(&web_sys::window()?.navigator(), &"gpu".into()).ok().filter(|g| g.is_object())?;
        let request: Function = Reflect::get(&gpu, &"requestAdapter".into()).ok()?.dyn_into().ok()?;
        let promise: Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
        let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok().filter(|a| a.is_object())?;
        Reflect::get(&adapter, &"info".into()).ok().filter(|i| i.is_object())
    }
    let Some(info) = ask().await else { return Default::default() };
    let field = |k: &str| Reflect::get(&info, &k.into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
    (field("vendor"), field("architecture"))
}

#[cfg(not(target_arch = "wasm32"))]
async fn vendor_and_architecture() -> (String, String) {
    Default::default()
}

/// Run `y = 2x + 1` on `n = 100` values with workgroups of 64 (so the last one is partial)
/// and compare every value with the CPU.
pub async fn self_check(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<KernelCheck, String> {
    let start = now_ms();
    let x: Vec<f32> = (0..SELF_CHECK_N).map(|i| i as f32).collect();
    let bytes = (SELF_CHECK_N * size_of::<f32>()) as wgpu::BufferAddress;
    let params = [SELF_CHECK_N as u32, 0, 0, 0];

    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("selfcheck"),
        source: wgpu::ShaderSource::Wgsl(SELF_CHECK_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("selfcheck.main"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("WG", f64::from(SELF_CHECK_WG))],
            ..Default::default()
        },
        cache: None,
    });
    let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("selfcheck.params"),
        contents: bytemuck::cast_slice(&params),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let input = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("selfcheck.x"),
        contents: bytemuck::cast_slice(&x),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let output = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("selfcheck.y"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("selfcheck.readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("selfcheck"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: input.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: output.as_entire_binding() },
        ],
    });

    let workgroups = (SELF_CHECK_N as u32).div_ceil(SELF_CHECK_WG);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("selfcheck") });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups, 1, 1);
    }
    encoder.copy_buffer_to_buffer(&output, 0, &staging, 0, bytes);
    queue.submit([encoder.finish()]);

    // On the web, `poll` does nothing and the callback fires from the event loop, so the
    // result arrives through a channel on every target alike.
    let (tx, rx) = oneshot::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| drop(tx.send(r)));
    #[cfg(not(target_arch = "wasm32"))]
    device
        .poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(std::time::Duration::from_secs(30)) })
        .map_err(|e| format!("waiting for the GPU failed: {e}"))?;
    rx.await
        .map_err(|_| "the GPU dropped the readback".to_string())?
        .map_err(|e| format!("reading the result back failed: {e}"))?;
    let y: Vec<f32> = {
        let view = staging.get_mapped_range(..).map_err(|e| format!("mapping the result failed: {e}"))?;
        view.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    staging.unmap();

    let first_mismatch =
        x.iter().zip(&y).enumerate().map(|(i, (x, y))| (i, 2.0 * x + 1.0, *y)).find(|(_, want, got)| want != got);
    Ok(KernelCheck {
        n: SELF_CHECK_N,
        workgroups,
        head: y.iter().take(4).copied().collect(),
        first_mismatch,
        millis: now_ms() - start,
    })
}

/// Milliseconds from a monotonic clock; `performance.now()` in the browser.
fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
        EPOCH.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// The same kernel the page runs, on the native adapter (lavapipe in CI).
    #[test]
    fn self_check_kernel_matches_cpu_on_native_adapter() {
        let require_gpu = std::env::var("PATCHWORK_REQUIRE_GPU").is_ok_and(|v| v == "1");
        let gpu = pollster::block_on(async {
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
            let adapter = instance.request_adapter(&wgpu::RequestAdapterOptions::default()).await.ok()?;
            let (device, queue) = adapter.request_device(&wgpu::DeviceDescriptor::default()).await.ok()?;
            Some((adapter, device, queue))
        });
        let Some((adapter, device, queue)) = gpu else {
            assert!(!require_gpu, "PATCHWORK_REQUIRE_GPU=1 but wgpu found no adapter");
            eprintln!("skipped: no GPU adapter (set PATCHWORK_REQUIRE_GPU=1 to make this a failure)");
            return;
        };
        let info = describe(&adapter);
        assert!(info.limits.iter().any(|l| l.name == "maxComputeWorkgroupSizeX" && l.value >= 64));
        let check = pollster::block_on(self_check(&device, &queue)).unwrap();
        assert_eq!(check.first_mismatch, None, "y = 2x + 1 wrong on {}", info.name);
        assert_eq!(check.head, [1.0, 3.0, 5.0, 7.0]);
    }
}
