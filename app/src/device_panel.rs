//! The compute device the page runs on, and the result of the self-check kernel: a compact
//! badge in the header that opens the full panel.
use leptos::prelude::*;

use crate::probe::{Device, GpuInfo, KernelCheck, Report};

#[component]
pub fn DevicePanel(report: Report) -> impl IntoView {
    let device = match report.device {
        Device::Gpu(info) => view! { <Adapter info /> }.into_any(),
        Device::Cpu { reason } => view! {
            <p class="device cpu" data-testid="device-summary">
                "No WebGPU: work runs on the CPU backend."
            </p>
            <p class="muted">{reason}</p>
        }
        .into_any(),
    };
    let kernel = report.kernel.map(|k| view! { <KernelLine result=k /> });
    view! {
        <section class="panel" data-testid="device-panel">
            <h2>"Compute device"</h2>
            {device}
            {kernel}
        </section>
    }
}

/// One line (adapter or CPU, and the self-check's outcome) that opens the full panel.
#[component]
pub fn DeviceBadge(report: Report) -> impl IntoView {
    let (text, class) = match &report.device {
        Device::Gpu(info) => {
            let name = adapter_name(info);
            let soft = if info.is_software() { " (software)" } else { "" };
            (format!("WebGPU: {name}{soft}"), "badge gpu")
        }
        Device::Cpu { .. } => ("No WebGPU".to_string(), "badge cpu"),
    };
    let check = match &report.kernel {
        Some(Ok(k)) if k.ok() => " ✓",
        Some(_) => " ✗ self-check failed",
        None => "",
    };
    view! {
        <details class="device-badge" data-testid="device-badge">
            <summary class=class data-testid="device-badge-text">
                {text}
                {check}
            </summary>
            <div class="device-popover">
                <DevicePanel report />
            </div>
        </details>
    }
}

fn adapter_name(info: &GpuInfo) -> String {
    let vendor = [info.vendor.as_str(), info.architecture.as_str()].join(" ").trim().to_string();
    match (info.name.is_empty(), vendor.is_empty()) {
        (false, false) => format!("{} ({vendor})", info.name),
        (false, true) => info.name.clone(),
        (true, false) => vendor,
        (true, true) => "unnamed adapter".to_string(),
    }
}

#[component]
fn Adapter(info: GpuInfo) -> impl IntoView {
    let name = adapter_name(&info);
    let fallback = info.is_software().then(|| {
        view! {
            <p class="note" data-testid="device-fallback">
                "Fallback (software) adapter: training and inference default to the CPU backend here."
            </p>
        }
    });
    let limits = info
        .limits
        .into_iter()
        .map(|limit| {
            view! {
                <tr>
                    <th>{limit.name}</th>
                    <td>{if limit.bytes { bytes(limit.value) } else { limit.value.to_string() }}</td>
                </tr>
            }
        })
        .collect_view();
    let features = if info.features.is_empty() {
        view! { <span class="muted">"none beyond core WebGPU"</span> }.into_any()
    } else {
        info.features.into_iter().map(|f| view! { <span class="chip">{f}</span> }).collect_view().into_any()
    };
    view! {
        <p class="device gpu" data-testid="device-summary">
            "WebGPU adapter: " <strong data-testid="adapter-name">{name}</strong> " "
            <span class="chip backend">{info.backend}</span>
        </p>
        {fallback}
        <table class="limits" data-testid="device-limits">
            {limits}
        </table>
        <p class="features" data-testid="device-features">
            <span class="label">"Features: "</span>
            {features}
        </p>
    }
}

#[component]
fn KernelLine(result: Result<KernelCheck, String>) -> impl IntoView {
    let (class, text) = match result {
        Ok(k) if k.ok() => (
            "check ok",
            format!(
                "kernel check: ok (y = 2x + 1 over {} values in {} workgroups, y[0..4] = {:?}, {:.1} ms)",
                k.n, k.workgroups, k.head, k.millis
            ),
        ),
        Ok(k) => {
            let (i, want, got) = k.first_mismatch.unwrap_or_default();
            ("check failed", format!("kernel check: FAILED at y[{i}]: expected {want}, got {got}"))
        }
        Err(e) => ("check failed", format!("kernel check: FAILED ({e})")),
    };
    view! {
        <p class=class data-testid="kernel-check">
            {text}
        </p>
    }
}

/// Byte counts read better as powers of two; the exact number follows.
fn bytes(v: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if v >= size && v.is_multiple_of(size) {
            return format!("{} {unit} ({v})", v / size);
        }
    }
    v.to_string()
}
