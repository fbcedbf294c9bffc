//! Reads denial events while the program runs, as the daemon does, on a
//! CPU of its own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Result, anyhow};
use aya::maps::{MapData, RingBuf};

pub struct Consumer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<u64>>,
}

impl Consumer {
    /// Starts reading `ring` on `cpu`.
    pub fn start(mut ring: RingBuf<MapData>, cpu: usize) -> Result<Consumer> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || -> Result<u64> {
            crate::affinity::pin_to_cpu(cpu, "denial event consumer")?;
            let mut read = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                while let Some(item) = ring.next() {
                    drop(item);
                    read += 1;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Ok(read)
        });
        Ok(Consumer { stop, thread })
    }

    /// Stops the thread; returns how many events it read.
    pub fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow!("the denial event consumer panicked"))?
    }
}
