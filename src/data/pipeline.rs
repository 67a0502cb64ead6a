//! Decode + preprocess on a rayon pool, delivered in input order through a bounded channel,
//! so memory stays bounded (at most `window` items in flight) and the model never waits on
//! disk while there is work ahead.

use crossbeam_channel::{bounded, Receiver};
use rayon::prelude::*;
use std::thread;

/// Applies `f` to every item on the rayon pool, `window` items at a time, and yields the results
/// in the items' order. The producer stops early when the receiver is dropped.
pub fn ordered_map<T, R, F>(items: Vec<T>, window: usize, f: F) -> Receiver<R>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(&T) -> R + Send + Sync + 'static,
{
    let window = window.max(1);
    let (tx, rx) = bounded::<R>(window);
    thread::spawn(move || {
        for chunk in items.chunks(window) {
            let results: Vec<R> = chunk.par_iter().map(&f).collect();
            for r in results {
                if tx.send(r).is_err() {
                    return;
                }
            }
        }
    });
    rx
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
    fn dropping_the_receiver_stops_the_producer() {
        let rx = ordered_map((0..100_000u32).collect(), 4, |&x| x);
        assert_eq!(rx.recv().unwrap(), 0);
        drop(rx);
    }
}
