//! Page-locked (pinned) host staging for the CUDA backend's input and result copies.
//!
//! Inputs ([`InputStage`], `upload_rgb`): host bytes → pinned host buffer (a host memcpy) →
//! device byte buffer, on a second, copy-only stream → a kernel on the compute stream reads
//! them. A pinned source lets the copy engine DMA directly (pageable memory goes through the
//! driver's own bounce buffer, synchronously), and the separate stream lets the copy of batch
//! k+1 run while batch k computes: the batch feed hands the next batch to the backend from its
//! own thread while the current one is still queued (`afclip score`).
//!
//! Synchronisation is explicit: the backend turns cudarc's per-buffer event tracking off (it
//! would record events around every launch argument), so these two events are the whole
//! contract between the streams:
//! - `copied`, recorded on the copy stream after the host→device copy. The compute stream waits
//!   on it before the consumer kernel reads the device bytes; the host waits on it before it
//!   refills (or frees) the pinned buffer.
//! - `consumed`, recorded on the compute stream after the consumer kernel (and after a new
//!   device buffer is allocated, which is ordered on the compute stream). The copy stream waits
//!   on it before it overwrites the device bytes.
//!
//! One buffer each way suffices for overlap: the consumer kernel is the first op of its batch,
//! so `consumed` fires as soon as that batch starts computing and the next copy can proceed
//! while the rest of it runs. A device buffer that is replaced (grown) is freed in
//! compute-stream order, after the kernels that read it.
//!
//! Results ([`OutputStage`], `download`): device → pinned host buffer on the compute stream, in
//! chunks of at most [`DOWNLOAD_CHUNK`] values, each waited for and copied into the returned
//! `Vec`. The results buffer is not write-combined (the host reads it), the inputs buffer is
//! (the host only writes it). Both grow to the largest transfer seen, at most a chunk for
//! results.

use anyhow::{Context, Result};
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, PinnedHostSlice};
use std::sync::Arc;

/// The most `f32` values one pinned download chunk holds (16 MiB).
pub(crate) const DOWNLOAD_CHUNK: usize = 1 << 22;

/// Host → device staging through pinned memory on a copy stream (see the module header).
pub(crate) struct InputStage {
    ctx: Arc<CudaContext>,
    copy: Arc<CudaStream>,
    host: Option<PinnedHostSlice<u8>>,
    device: Option<CudaSlice<u8>>,
    copied: CudaEvent,
    consumed: CudaEvent,
}

impl InputStage {
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Self> {
        Ok(Self {
            ctx: ctx.clone(),
            copy: ctx.new_stream().context("cuda: creating the copy stream")?,
            host: None,
            device: None,
            copied: ctx.new_event(None).context("cuda: creating an event")?,
            consumed: ctx.new_event(None).context("cuda: creating an event")?,
        })
    }

    /// Copies `bytes` (non-empty) to the device and queues `consume(device_bytes)` on `compute`
    /// after the copy; `device_bytes` holds at least `bytes.len()` bytes, the first of them
    /// `bytes`.
    pub fn upload<R>(
        &mut self,
        compute: &Arc<CudaStream>,
        bytes: &[u8],
        consume: impl FnOnce(&CudaSlice<u8>) -> Result<R>,
    ) -> Result<R> {
        let n = bytes.len();
        // The previous copy out of the pinned buffer must be over before it is refilled.
        self.copied
            .synchronize()
            .context("cuda: waiting for the previous input copy")?;
        if self.host.as_ref().is_none_or(|h| h.len() < n) {
            self.host = None;
            // SAFETY: the buffer is written below before anything reads it.
            let host = unsafe { self.ctx.alloc_pinned::<u8>(n) }
                .with_context(|| format!("cuda: allocating {n} pinned host bytes"))?;
            self.host = Some(host);
        }
        if self.device.as_ref().is_none_or(|d| d.len() < n) {
            // SAFETY: the copy below writes the bytes the consumer reads.
            let device = unsafe { compute.alloc::<u8>(n) }
                .with_context(|| format!("cuda: allocating {n} device bytes"))?;
            self.device = Some(device);
            self.consumed
                .record(compute)
                .context("cuda: recording an event")?;
        }
        let (Some(host), Some(device)) = (self.host.as_mut(), self.device.as_mut()) else {
            unreachable!("both buffers were just made large enough");
        };
        let staged = &mut host
            .as_mut_slice()
            .context("cuda: mapping the pinned buffer")?[..n];
        staged.copy_from_slice(bytes);
        self.copy
            .wait(&self.consumed)
            .context("cuda: ordering the input copy")?;
        // A plain slice of pinned memory: the driver recognises the address and DMAs from it
        // asynchronously; it stays untouched until `copied` has fired (above, next call).
        let staged: &[u8] = staged;
        self.copy
            .memcpy_htod(staged, &mut device.slice_mut(..n))
            .with_context(|| format!("cuda: copying {n} input bytes"))?;
        self.copied
            .record(&self.copy)
            .context("cuda: recording an event")?;
        compute
            .wait(&self.copied)
            .context("cuda: ordering after the input copy")?;
        let result = consume(device);
        self.consumed
            .record(compute)
            .context("cuda: recording an event")?;
        result
    }
}

impl Drop for InputStage {
    fn drop(&mut self) {
        // The pinned buffer must outlive the copy out of it.
        let _ = self.copied.synchronize();
    }
}

/// Device → host downloads through a pinned buffer (see the module header).
#[derive(Default)]
pub(crate) struct OutputStage {
    host: Option<PinnedHostSlice<f32>>,
}

impl OutputStage {
    /// The first `len` values of `src`, after every op queued on `compute` before them.
    pub fn download(
        &mut self,
        ctx: &Arc<CudaContext>,
        compute: &Arc<CudaStream>,
        src: &CudaSlice<f32>,
        len: usize,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(len);
        if len == 0 {
            return Ok(out);
        }
        let chunk = len.min(DOWNLOAD_CHUNK);
        if self.host.as_ref().is_none_or(|h| h.len() < chunk) {
            self.host = None;
            // SAFETY: every value read from the buffer is first written by a copy below. Flags
            // 0: cached, not write-combined, since the host reads it.
            let host = unsafe { ctx.alloc_pinned_with_flags::<f32>(chunk, 0) }
                .with_context(|| format!("cuda: allocating {chunk} pinned f32"))?;
            self.host = Some(host);
        }
        let host = self.host.as_mut().expect("allocated above");
        let staged = host
            .as_mut_slice()
            .context("cuda: mapping the pinned buffer")?;
        for start in (0..len).step_by(chunk) {
            let end = (start + chunk).min(len);
            let dst = &mut staged[..end - start];
            compute
                .memcpy_dtoh(&src.slice(start..end), dst)
                .with_context(|| format!("cuda: downloading {} f32", end - start))?;
            compute
                .synchronize()
                .context("cuda: waiting for a download")?;
            out.extend_from_slice(dst);
        }
        Ok(out)
    }
}
