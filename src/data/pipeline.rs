//! The streaming decode pipeline: items from any iterator (a lazy folder walk, a dataset list)
//! are decoded/preprocessed on the rayon pool and delivered in input order through bounded
//! crossbeam channels, so memory stays bounded (at most `2 * window` results alive) whatever
//! the number of items, and the consumer (the model) never waits on disk while there is work
//! ahead. A slow item holds back only the delivery, not the decoding of the items after it
//! (a sliding window, not lock-step chunks).
//!
//! Also the image loader used by `score`: the bad-input checks (file name, symlinks, extension
//! vs content, pixel limit), the optional decoded cache, then decode + resize
//! ([`ImageLoader::load_resized`]: `score` hands these bytes to the model, which normalises them
//! in the backend on the way in, `Backend::upload_rgb`, so a quarter of the bytes cross to a
//! GPU) and, for callers that want the f32 tensor on the host, normalise
//! ([`ImageLoader::load`]).

use super::cache::Cache;
use super::decode::{decode_rgb_bytes, Pixels};
use super::preprocess::{normalize_chw, PreparedImage};
use super::resize::resize_bicubic;
use anyhow::{bail, Context, Result};
use crossbeam_channel::{bounded, unbounded, Receiver};
use image::ImageFormat;
use std::collections::BTreeMap;
use std::io::Cursor;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::thread;

/// The in-order results of [`ordered_map`]. A panic inside the mapped function is re-raised
/// in the thread that reads the result it would have produced, never lost.
pub struct Ordered<R> {
    rx: Receiver<thread::Result<R>>,
}

impl<R> Ordered<R> {
    /// The next result in input order; `None` once every item has been delivered.
    pub fn recv(&self) -> Option<R> {
        match self.rx.recv() {
            Ok(Ok(r)) => Some(r),
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => None,
        }
    }

    /// Every remaining result, in input order.
    pub fn iter(&self) -> impl Iterator<Item = R> + '_ {
        std::iter::from_fn(move || self.recv())
    }
}

/// Applies `f` to every item of `items` on the rayon pool, at most `window` items in flight,
/// and yields the results in the items' order. `items` is consumed lazily on a producer thread,
/// so it may be an endless or very long stream. Dropping the [`Ordered`] stops the producer.
pub fn ordered_map<I, T, R, F>(items: I, window: usize, f: F) -> Ordered<R>
where
    I: IntoIterator<Item = T>,
    I::IntoIter: Send + 'static,
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(&T) -> R + Send + Sync + 'static,
{
    let window = window.max(1);
    let f = Arc::new(f);
    let items = items.into_iter();
    let (out_tx, out_rx) = bounded::<thread::Result<R>>(window);
    let (done_tx, done_rx) = unbounded::<(usize, thread::Result<R>)>();
    // One token per item between its submission and its delivery to `out_tx`.
    let (slot_tx, slot_rx) = bounded::<()>(window);
    thread::spawn(move || {
        for (index, item) in items.enumerate() {
            if slot_tx.send(()).is_err() {
                return;
            }
            let f = Arc::clone(&f);
            let done = done_tx.clone();
            rayon::spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(|| f(&item)));
                let _ = done.send((index, result));
            });
        }
    });
    thread::spawn(move || {
        let mut next = 0usize;
        let mut held = BTreeMap::new();
        for (index, result) in done_rx.iter() {
            held.insert(index, result);
            while let Some(result) = held.remove(&next) {
                next += 1;
                if out_tx.send(result).is_err() {
                    return;
                }
                let _ = slot_rx.recv();
            }
        }
    });
    Ordered { rx: out_rx }
}

/// The default `--max-pixels`: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Loads images for the model with the bad-input policy of `score`: every problem is an error
/// that names the file and the cause.
pub struct ImageLoader {
    pub side: usize,
    /// Images with more pixels than this are refused before decoding.
    pub max_pixels: u64,
    pub cache: Option<Cache>,
}

impl ImageLoader {
    /// [`ImageLoader::load_resized`], then the CLIP normalisation on the host.
    pub fn load(&self, path: &Path) -> Result<PreparedImage> {
        let resized = self.load_resized(path)?;
        let mut tensor = vec![0f32; 3 * resized.width * resized.height];
        normalize_chw(&resized, &mut tensor)?;
        Ok(PreparedImage { tensor, resized })
    }

    /// The image at `path`, decoded as RGB and resized to `side x side`.
    pub fn load_resized(&self, path: &Path) -> Result<Pixels> {
        let name = path.display();
        if path.to_str().is_none() {
            bail!("{name}: file name is not valid UTF-8 (shown with replacement characters); rename the file");
        }
        check_symlink(path)?;
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {name}"))?;
        if !meta.is_file() {
            bail!("{name}: not a regular file");
        }
        if let Some(cache) = &self.cache {
            if let Some(resized) = cache.get(path, &meta, self.side) {
                return Ok(resized);
            }
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read image file {name}"))?;
        if bytes.is_empty() {
            bail!("{name}: empty file (0 bytes), not an image");
        }
        check_extension(path, &bytes)?;
        let mut reader = image::ImageReader::new(Cursor::new(&bytes))
            .with_guessed_format()
            .with_context(|| format!("{name}: cannot read image header"))?;
        // Only the header is read here; the pixel limit below is the one that applies.
        reader.no_limits();
        if let Ok((w, h)) = reader.into_dimensions() {
            let pixels = u64::from(w) * u64::from(h);
            if pixels > self.max_pixels {
                bail!(
                    "{name}: image is {w}x{h} = {pixels} pixels, above the limit of {} \
                     (raise it with --max-pixels)",
                    self.max_pixels
                );
            }
        }
        let rgb = decode_rgb_bytes(&bytes, &name.to_string())?;
        let resized = resize_bicubic(&rgb, self.side, self.side);
        if let Some(cache) = &self.cache {
            cache.put(path, &meta, &resized);
        }
        Ok(resized)
    }
}

/// A symlink must lead to a file: a dangling link and a loop are named as such.
fn check_symlink(path: &Path) -> Result<()> {
    let link = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !link.file_type().is_symlink() {
        return Ok(());
    }
    if let Err(e) = std::fs::metadata(path) {
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        // ELOOP is 40 on Linux; io::ErrorKind has no stable variant for it.
        if e.raw_os_error() == Some(40) {
            bail!("{}: symlink loop (it points to {target})", path.display());
        }
        if e.kind() == std::io::ErrorKind::NotFound {
            bail!("{}: dangling symlink to {target}", path.display());
        }
        return Err(e).with_context(|| format!("cannot follow symlink {}", path.display()));
    }
    Ok(())
}

/// A file whose content is a supported image format must carry that format's extension.
fn check_extension(path: &Path, bytes: &[u8]) -> Result<()> {
    let content = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp | ImageFormat::Tiff)) => f,
        // Unknown and unsupported formats are named by the decoder.
        _ => return Ok(()),
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ImageFormat::from_extension(ext) != Some(content) {
        let shown = if ext.is_empty() {
            "no extension".to_string()
        } else {
            format!("extension .{ext}")
        };
        bail!(
            "{}: wrong extension: the content is a {content:?} image but the name has {shown}",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ordered_map;

    #[test]
    fn keeps_order_and_delivers_everything() {
        let items: Vec<u64> = (0..1000).collect();
        let rx = ordered_map(items, 7, |&x| {
            if x % 13 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            x * x
        });
        let got: Vec<u64> = rx.iter().collect();
        assert_eq!(got, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    }

    #[test]
    fn consumes_a_lazy_stream_with_bounded_look_ahead() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pulled);
        let stream = (0..usize::MAX).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let rx = ordered_map(stream, 4, |&x| x + 1);
        let first: Vec<usize> = rx.iter().take(10).collect();
        assert_eq!(first, (1..=10).collect::<Vec<_>>());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let n = pulled.load(Ordering::SeqCst);
        assert!(n <= 10 + 2 * 4 + 1, "pulled {n} items for 10 delivered");
    }

    #[test]
    fn a_panic_reaches_the_consumer() {
        let rx = ordered_map(0..10u32, 3, |&x| {
            assert!(x != 5, "item five is bad");
            x
        });
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rx.iter().collect::<Vec<_>>()
        }));
        assert!(got.is_err());
    }

    #[test]
    fn dropping_the_receiver_stops_the_producer() {
        let rx = ordered_map(0..100_000u32, 4, |&x| x);
        assert_eq!(rx.recv(), Some(0));
        drop(rx);
    }
}
