//! `patchwork info`: the native GPU adapter wgpu would use, with the limits and features that
//! bound our kernels, or a note that work runs on the CPU backend.
use anyhow::bail;

#[derive(clap::Args)]
pub struct Args {
    /// List every adapter wgpu finds, not only the one it would pick.
    #[arg(long)]
    all: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let require_gpu = std::env::var("PATCHWORK_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = if args.all {
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
    } else {
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .into_iter()
        .collect()
    };
    if adapters.is_empty() {
        println!("no GPU adapter found: work runs on the CPU backend");
        if require_gpu {
            bail!("PATCHWORK_REQUIRE_GPU=1 but wgpu found no adapter");
        }
        return Ok(());
    }
    for (i, adapter) in adapters.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_adapter(adapter);
    }
    Ok(())
}

fn print_adapter(adapter: &wgpu::Adapter) {
    let info = adapter.get_info();
    let l = adapter.limits();
    println!("adapter:     {}", info.name);
    println!("backend:     {}", info.backend);
    println!("device type: {:?}", info.device_type);
    println!("driver:      {} {}", info.driver, info.driver_info);
    println!("vendor/device id: {:#06x}/{:#06x}", info.vendor, info.device);
    if info.device_type == wgpu::DeviceType::Cpu {
        println!("note:        a software adapter; the CPU backend is usually faster here");
    }
    println!("limits:");
    let limits: [(&str, u64); 9] = [
        ("max_compute_workgroup_size_x", l.max_compute_workgroup_size_x.into()),
        ("max_compute_invocations_per_workgroup", l.max_compute_invocations_per_workgroup.into()),
        ("max_compute_workgroup_storage_size", l.max_compute_workgroup_storage_size.into()),
        ("max_compute_workgroups_per_dimension", l.max_compute_workgroups_per_dimension.into()),
        ("max_storage_buffers_per_shader_stage", l.max_storage_buffers_per_shader_stage.into()),
        ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
        ("max_uniform_buffer_binding_size", l.max_uniform_buffer_binding_size),
        ("max_buffer_size", l.max_buffer_size),
        ("max_bind_groups", l.max_bind_groups.into()),
    ];
    for (name, value) in limits {
        println!("  {name:<40} {value}");
    }
    let features: Vec<_> = adapter.features().iter_names().map(|(name, _)| name.to_lowercase()).collect();
    println!("features ({}):", features.len());
    for f in features {
        println!("  {f}");
    }
}
