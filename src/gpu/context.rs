//! Finding a GPU: list the wgpu adapters best-first, open one as a device and queue.
//!
//! "Best" means: a discrete GPU before an integrated one, before a virtual one, before a
//! software (CPU) one; and within a type, Vulkan/Metal/DX12 before OpenGL. Index 0 of
//! `gpu-train devices` is therefore the adapter a user most likely wants.

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// An open device with what we learned about it.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// The first error the device reported on its own (validation, out of memory, lost).
    errors: Arc<Mutex<Option<String>>>,
}

/// The hint every "no adapter" message carries.
pub const NO_ADAPTER_HINT: &str =
    "install a Vulkan driver (on Debian: apt-get install mesa-vulkan-drivers for the \
     software adapter lavapipe) or pass --cpu";

/// A headless instance; WGPU_BACKEND in the environment can narrow the backends (wgpu's own
/// convention, e.g. WGPU_BACKEND=gl).
fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (kind, backend)
}

/// Every adapter wgpu finds, best first (the same chip can appear twice, through Vulkan and
/// through OpenGL; the Vulkan one sorts first).
pub fn adapters() -> Vec<wgpu::Adapter> {
    let mut list = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    // A stable sort keeps wgpu's own order among equals.
    list.sort_by_key(|a| rank(&a.get_info()));
    list
}

/// One line describing an adapter: name, backend, type, driver.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    let kind = match info.device_type {
        wgpu::DeviceType::Cpu => "software adapter (runs on the CPU)".to_string(),
        other => format!("{other:?}"),
    };
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{} [{:?}, {kind}, driver {driver}]",
        info.name, info.backend
    )
}

/// The adapter list as `gpu-train devices` prints it.
pub fn list_text() -> String {
    let list = adapters();
    if list.is_empty() {
        return format!("no GPU adapter found: {NO_ADAPTER_HINT}\n");
    }
    list.iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {}\n", describe(&a.get_info())))
        .collect()
}

impl Gpu {
    /// Opens adapter `index` of [`adapters`], asking for the adapter's own limits (the
    /// defaults cap a storage binding at 128 MiB, less than some adapters offer) and for
    /// timestamp queries where the adapter has them.
    pub fn open(index: usize) -> Result<Gpu> {
        let list = adapters();
        if list.is_empty() {
            return Err(Error::Adapter(format!(
                "no GPU adapter found: {NO_ADAPTER_HINT}"
            )));
        }
        let Some(adapter) = list.get(index) else {
            let names: Vec<String> = list
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{i}: {}", a.get_info().name))
                .collect();
            return Err(Error::Adapter(format!(
                "--device {index} does not exist; adapters: {} (see `gpu-train devices`)",
                names.join(", ")
            )));
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Timestamps for the profile, f16 in shaders for --precision f16: where offered.
        let features = adapter.features()
            & (wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gpu-train"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Adapter(format!("{}: cannot open the device: {e}", info.name)))?;
        let errors = Arc::new(Mutex::new(None));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        Ok(Gpu {
            device,
            queue,
            info,
            features,
            limits,
            errors,
        })
    }

    /// The adapter for tests: adapter 0, or `None` when this machine has none.
    pub fn for_tests() -> Option<Gpu> {
        Gpu::open(0).ok()
    }

    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether this device runs subgroup operations in subgroups of exactly `lanes` lanes.
    pub fn has_subgroups_of(&self, lanes: u32) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
            && self.info.subgroup_min_size == lanes
            && self.info.subgroup_max_size == lanes
    }

    /// Fails with the first error the device reported since it was opened, if any.
    pub fn check(&self) -> Result<()> {
        match self.errors.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
    }

    /// Waits for all submitted work to finish.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        self.check()
    }

    /// Copies `size` bytes at `offset` of `src` back to system RAM (waits for the GPU).
    /// Used once per epoch for the totals and for snapshots: never inside a training step.
    pub fn read_bytes(&self, src: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(src, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        pollster::block_on(rx.receive())
            .ok_or_else(|| Error::Gpu("read-back was cancelled".into()))?
            .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?;
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// [`Gpu::read_bytes`] of a whole buffer of f32.
    pub fn read_f32(&self, src: &wgpu::Buffer) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(
            src,
            0,
            src.size(),
        )?))
    }
}
