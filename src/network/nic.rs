//! The wire measured: a NIC's own counters (bytes and packets each way, from sysfs) and the
//! TCP retransmissions of this network namespace (/proc/net/snmp), sampled every millisecond
//! while a run is traced (`--nic IFACE`), and written into the trace as counter tracks.
//!
//! These are what the kernel counted on the interface: every Ethernet frame with its
//! Ethernet, IP and TCP headers, MPI's own messages included, so they can be set beside the
//! algorithm's payload (the all-reduce's byte counts) and the model's line-rate picture.

use crate::error::{Error, Result};
use serde_json::json;
use std::sync::atomic::{AtomicU8, Ordering};
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
    gate: Arc<AtomicU8>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

/// What the sampler keeps, set by the trace as the run reaches, passes and leaves its traced
/// steps: before them only the last 32 to 64 changes (the baseline), during them every change,
/// after them nothing (the thread ends). A run traced for steps 0..2 keeps 2 steps of samples,
/// however long it then trains.
pub const GATE_BEFORE: u8 = 0;
pub const GATE_RECORDING: u8 = 1;
pub const GATE_DONE: u8 = 2;

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
    /// Starts sampling `nic` (a name from `ip link`, e.g. eth0), keeping samples as its
    /// [`gate`](Self::gate) says (before the traced steps: only the newest).
    pub fn start(nic: &str) -> Result<NicSampler> {
        let bad = |why: &str| Error::Config(format!("--nic {nic}: {why}"));
        if nic.is_empty() || nic.len() > 15 || nic.contains(['/', ' ']) || nic.starts_with('.') {
            return Err(bad("not an interface name (see `ip link`)"));
        }
        let dir = format!("/sys/class/net/{nic}/statistics");
        let first = sample(&dir)
            .ok_or_else(|| bad("no such interface in this network namespace (see `ip link`)"))?;
        let gate = Arc::new(AtomicU8::new(GATE_BEFORE));
        let flag = gate.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = vec![first];
            loop {
                let state = flag.load(Ordering::Relaxed);
                if state == GATE_DONE {
                    break;
                }
                std::thread::sleep(SAMPLE_EVERY);
                let Some(s) = sample(&dir) else { continue };
                let last = samples.last().expect("never empty");
                // Only changes are kept (and the last), so an idle wire costs nothing.
                if (s.tx_bytes, s.rx_bytes, s.retransmits)
                    != (last.tx_bytes, last.rx_bytes, last.retransmits)
                {
                    samples.push(s);
                }
                if state == GATE_BEFORE && samples.len() > 64 {
                    // Before the traced steps only the recent past is kept: the baseline the
                    // first traced step starts from (the gate opens as that step starts, and
                    // this thread may see it a sample late, so not only the newest).
                    samples.drain(..samples.len() - 32);
                }
            }
            samples.extend(sample(&dir));
            samples
        });
        Ok(NicSampler {
            nic: nic.to_string(),
            gate,
            thread,
        })
    }

    /// The switch the trace sets ([`GATE_BEFORE`], [`GATE_RECORDING`], [`GATE_DONE`]).
    pub fn gate(&self) -> Arc<AtomicU8> {
        self.gate.clone()
    }

    /// Stops sampling; the samples, oldest first.
    pub fn finish(self) -> Vec<Sample> {
        self.gate.store(GATE_DONE, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// How far a counter moved from `a` to `b`: a counter that went backwards was reset (its
/// interface deleted and made again), and has counted `b` since.
fn moved(a: u64, b: u64) -> u64 {
    if b >= a {
        b - a
    } else {
        b
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
    // Totals since the first sample: tx, rx, tx packets, rx packets, TCP retransmits.
    let mut total = [0u64; 5];
    let counts = |s: &Sample| {
        [
            s.tx_bytes,
            s.rx_bytes,
            s.tx_packets,
            s.rx_packets,
            s.retransmits,
        ]
    };
    for w in samples.windows(2) {
        let dt = w[1].at.duration_since(w[0].at).as_secs_f64().max(1e-6);
        let (a, b) = (counts(&w[0]), counts(&w[1]));
        let d: Vec<u64> = a.iter().zip(&b).map(|(&a, &b)| moved(a, b)).collect();
        for (t, d) in total.iter_mut().zip(&d) {
            *t = t.saturating_add(*d);
        }
        let mbit = |bytes: u64| bytes as f64 * 8.0 / dt / 1e6;
        events.push(json!({
            "name": format!("NIC {nic} (measured), Mbit/s"), "ph": "C", "pid": rank,
            "ts": us(w[0].at),
            "args": {"tx": mbit(d[0]), "rx": mbit(d[1])},
        }));
        events.push(json!({
            "name": format!("NIC {nic} (measured), bytes"), "ph": "C", "pid": rank,
            "ts": us(w[1].at),
            "args": {"tx": total[0], "rx": total[1],
                     "tx_packets": total[2],
                     "rx_packets": total[3],
                     "tcp_retransmits": total[4]},
        }));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64, tx: u64) -> Sample {
        Sample {
            at: base + Duration::from_millis(ms),
            tx_bytes: tx,
            rx_bytes: tx / 2,
            tx_packets: tx / 1000,
            rx_packets: 0,
            retransmits: 0,
        }
    }

    #[test]
    fn a_counter_that_goes_backwards_is_a_reset_not_a_wrap() {
        let base = Instant::now();
        // 5,000 bytes, then the interface is made again (its counters from 0) and sends 3,000.
        let samples = [at(base, 0, 10_000), at(base, 1, 15_000), at(base, 2, 3_000)];
        let events = counter_events("eth0", &samples, 0, |t| {
            t.duration_since(base).as_secs_f64() * 1e6
        });
        let totals: Vec<u64> = events
            .iter()
            .filter(|e| e["name"].as_str().unwrap().ends_with("bytes"))
            .map(|e| e["args"]["tx"].as_u64().unwrap())
            .collect();
        assert_eq!(totals, [5_000, 8_000]);
        let rates: Vec<f64> = events
            .iter()
            .filter(|e| e["name"].as_str().unwrap().ends_with("Mbit/s"))
            .map(|e| e["args"]["tx"].as_f64().unwrap())
            .collect();
        // 3,000 bytes in 1 ms: 24 Mbit/s, not 1.8e19 bytes' worth.
        assert!((rates[1] - 24.0).abs() < 1e-9, "{rates:?}");
    }
}
