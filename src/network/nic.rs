//! The wire measured: a NIC's own counters (bytes and packets each way, from sysfs) and the
//! TCP retransmissions of this network namespace (/proc/net/snmp), sampled every millisecond
//! while a run is traced (`--nic IFACE`), and written into the trace as counter tracks.
//!
//! These are what the kernel counted on the interface: every Ethernet frame with its
//! Ethernet, IP and TCP headers, MPI's own messages included, so they can be set beside the
//! algorithm's payload (the all-reduce's byte counts) and the model's line-rate picture.

use crate::error::{Error, Result};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the counters are read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// TCP segments retransmitted in this namespace so far.
    pub retransmits: u64,
}

/// A thread reading the counters of one NIC until it is finished.
pub struct NicSampler {
    pub nic: String,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// TCP's RetransSegs from /proc/net/snmp (a header line of names, then a line of values).
fn retransmits() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    if let [names, values] = tcp[..] {
        let at = names.split_whitespace().position(|n| n == "RetransSegs");
        let v = at.and_then(|i| values.split_whitespace().nth(i));
        return v.and_then(|v| v.parse().ok()).unwrap_or(0);
    }
    0
}

/// The counters of `nic` now (None if it has none here).
pub fn read_now(nic: &str) -> Option<Sample> {
    sample(&format!("/sys/class/net/{nic}/statistics"))
}

fn sample(dir: &str) -> Option<Sample> {
    Some(Sample {
        at: Instant::now(),
        tx_bytes: read_u64(&format!("{dir}/tx_bytes"))?,
        rx_bytes: read_u64(&format!("{dir}/rx_bytes"))?,
        tx_packets: read_u64(&format!("{dir}/tx_packets"))?,
        rx_packets: read_u64(&format!("{dir}/rx_packets"))?,
        retransmits: retransmits(),
    })
}

impl NicSampler {
    /// Starts sampling `nic` (a name from `ip link`, e.g. eth0).
    pub fn start(nic: &str) -> Result<NicSampler> {
        let bad = |why: &str| Error::Config(format!("--nic {nic}: {why}"));
        if nic.is_empty() || nic.len() > 15 || nic.contains(['/', ' ']) || nic.starts_with('.') {
            return Err(bad("not an interface name (see `ip link`)"));
        }
        let dir = format!("/sys/class/net/{nic}/statistics");
        let first = sample(&dir)
            .ok_or_else(|| bad("no such interface in this network namespace (see `ip link`)"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = vec![first];
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(SAMPLE_EVERY);
                if let Some(s) = sample(&dir) {
                    // Only changes are kept (and the last), so an idle wire costs nothing.
                    let last = samples.last().expect("never empty");
                    if (s.tx_bytes, s.rx_bytes, s.retransmits)
                        != (last.tx_bytes, last.rx_bytes, last.retransmits)
                    {
                        samples.push(s);
                    }
                }
            }
            samples.extend(sample(&dir));
            samples
        });
        Ok(NicSampler {
            nic: nic.to_string(),
            stop,
            thread,
        })
    }

    /// Stops sampling; the samples, oldest first.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Chrome counter events of `samples` for process `rank`, times from `origin`: the NIC's rate
/// each way in Mbit/s between two samples (a counter track per NIC), and the TCP
/// retransmissions so far.
pub fn counter_events(
    nic: &str,
    samples: &[Sample],
    rank: usize,
    us: impl Fn(Instant) -> f64,
) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for w in samples.windows(2) {
        let dt = w[1].at.duration_since(w[0].at).as_secs_f64().max(1e-6);
        let mbit = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * 8.0 / dt / 1e6;
        events.push(json!({
            "name": format!("NIC {nic} (measured), Mbit/s"), "ph": "C", "pid": rank,
            "ts": us(w[0].at),
            "args": {"tx": mbit(w[0].tx_bytes, w[1].tx_bytes), "rx": mbit(w[0].rx_bytes, w[1].rx_bytes)},
        }));
        events.push(json!({
            "name": format!("NIC {nic} (measured), bytes"), "ph": "C", "pid": rank,
            "ts": us(w[1].at),
            "args": {"tx": w[1].tx_bytes - samples[0].tx_bytes, "rx": w[1].rx_bytes - samples[0].rx_bytes,
                     "tx_packets": w[1].tx_packets - samples[0].tx_packets,
                     "rx_packets": w[1].rx_packets - samples[0].rx_packets,
                     "tcp_retransmits": w[1].retransmits - samples[0].retransmits},
        }));
    }
    events
}
