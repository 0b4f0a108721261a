//! The faults a demo service simulates on `POST /fault`, and the two that run beside the
//! requests: the memory leak (holds more memory every second up to a cap) and the CPU burn
//! (keeps a share of one core busy). Both stop when the fault changes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::service::Service;

/// The fault in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub mode: Mode,
    /// Added to every request in `latency` mode.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of requests answered 500 in `errors` mode.
    #[serde(default)]
    pub error_rate: f64,
    /// MiB a second held in `memory_leak` mode (0: 10).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leak_mb_per_s: u64,
    /// Most MiB held in `memory_leak` mode (0: 256; never more than [`LEAK_CAP_MB`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leak_cap_mb: u64,
    /// Share of one core kept busy in `cpu_burn` mode (0: all of it).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub burn_share: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

/// The memory leak never holds more than this, whatever a request asks.
pub const LEAK_CAP_MB: u64 = 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    None,
    Crash,
    Hang,
    Latency,
    Errors,
    MemoryLeak,
    CpuBurn,
}

/// Holds more memory every second until the cap, and frees it when the fault changes.
pub async fn leak(svc: std::sync::Arc<Service>, generation: u64, fault: Fault) {
    const MIB: usize = 1024 * 1024;
    let rate = if fault.leak_mb_per_s == 0 {
        10
    } else {
        fault.leak_mb_per_s
    };
    let cap = if fault.leak_cap_mb == 0 {
        256
    } else {
        fault.leak_cap_mb
    }
    .min(LEAK_CAP_MB);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while svc.fault_generation.load(Ordering::SeqCst) == generation {
        if (held.len() as u64) < cap {
            let more = rate.min(cap - held.len() as u64);
            // Written, not only reserved, so the pages count as resident memory.
            held.extend((0..more).map(|_| vec![0xA5u8; MIB]));
            svc.leaked_bytes.set((held.len() * MIB) as i64);
        }
        tick.tick().await;
    }
    drop(held);
    svc.leaked_bytes.set(0);
}

/// Keeps one core busy for `share` of every 100 ms until the fault changes.
pub fn burn(svc: &Service, generation: u64, share: f64) {
    let slice = Duration::from_millis(100);
    let mut spin: u64 = 0;
    while svc.fault_generation.load(Ordering::SeqCst) == generation {
        let started = Instant::now();
        while started.elapsed() < slice.mul_f64(share) {
            spin = std::hint::black_box(spin.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        std::thread::sleep(slice.saturating_sub(started.elapsed()));
    }
}
