//! The wire as the NICs counted it: each rank's NIC samples in a trace (`--nic`, written by
//! [`nic`](super::nic) as Chrome counter events), read back per traced step beside what the
//! all-reduce itself reported sending. What a network engineer checks on a real link: the bytes
//! on the wire against the payload (the headers and ACKs), the packets, how busy the link was
//! while the step ran, how long it ran near line rate, and what TCP had to send again.

use super::link::TracedStep;
use serde_json::Value;
use std::collections::BTreeMap;

/// The cumulative counts of one NIC since it was first sampled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub tx: u64,
    pub tx_packets: u64,
    pub retransmits: u64,
}

/// One rank's NIC in a trace: its sampled send rate (µs, Mbit/s over the sample) and its
/// cumulative counts (µs, counts), both in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NicTrack {
    pub rank: u64,
    pub rate: Vec<(f64, f64)>,
    pub totals: Vec<(f64, Counts)>,
}

impl NicTrack {
    /// The counts at `us`: the last sample at or before it (zero before the first).
    pub fn at(&self, us: f64) -> Counts {
        let i = self.totals.partition_point(|(t, _)| *t <= us);
        if i == 0 {
            Counts::default()
        } else {
            self.totals[i - 1].1
        }
    }
}

/// Every rank's NIC track in `trace` (none where the run had no `--nic`).
pub fn nic_tracks(trace: &Value) -> Vec<NicTrack> {
    let mut by_rank: BTreeMap<u64, NicTrack> = BTreeMap::new();
    let events = trace["traceEvents"].as_array().map_or(&[][..], |v| &v[..]);
    for e in events.iter().filter(|e| e["ph"] == "C") {
        let (Some(name), Some(rank), Some(ts)) =
            (e["name"].as_str(), e["pid"].as_u64(), e["ts"].as_f64())
        else {
            continue;
        };
        if !name.starts_with("NIC ") {
            continue;
        }
        let track = by_rank.entry(rank).or_insert_with(|| NicTrack {
            rank,
            ..NicTrack::default()
        });
        let args = &e["args"];
        if name.ends_with("Mbit/s") {
            track.rate.push((ts, args["tx"].as_f64().unwrap_or(0.0)));
        } else if name.ends_with("bytes") {
            let n = |k: &str| args[k].as_u64().unwrap_or(0);
            track.totals.push((
                ts,
                Counts {
                    tx: n("tx"),
                    tx_packets: n("tx_packets"),
                    retransmits: n("tcp_retransmits"),
                },
            ));
        }
    }
    let mut tracks: Vec<NicTrack> = by_rank.into_values().collect();
    for t in &mut tracks {
        t.rate.sort_by(|a, b| a.0.total_cmp(&b.0));
        t.totals.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    tracks
}

/// Each traced step's sync on each rank (its first replica's all-reduce spans of that step,
/// summed, µs): step → one value a rank. The rank that arrived last at a step's all-reduce
/// waited for nobody: its sync is the transfer itself; the others' include waiting for it.
pub fn syncs_by_step(trace: &Value) -> BTreeMap<u64, Vec<f64>> {
    let events = trace["traceEvents"].as_array().map_or(&[][..], |v| &v[..]);
    let mut first_track: BTreeMap<u64, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        if let (Some(p), Some(t)) = (e["pid"].as_u64(), e["tid"].as_u64()) {
            if t < crate::train::watch::GPU_TRACK as u64 {
                let f = first_track.entry(p).or_insert(t);
                *f = (*f).min(t);
            }
        }
    }
    let mut per: BTreeMap<(u64, u64), f64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let (Some(name), Some(p), Some(t), Some(step)) = (
            e["name"].as_str(),
            e["pid"].as_u64(),
            e["tid"].as_u64(),
            e["args"]["step"].as_u64(),
        ) else {
            continue;
        };
        if name.starts_with("all-reduce") && first_track.get(&p) == Some(&t) {
            *per.entry((step, p)).or_default() += e["dur"].as_f64().unwrap_or(0.0);
        }
    }
    let mut out: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for ((step, _), us) in per {
        out.entry(step).or_default().push(us);
    }
    out
}

/// One rank's syncs in a trace: its all-reduce spans (its first replica's track) summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RankSync {
    pub rank: u64,
    /// Steps with an all-reduce, and the totals over them.
    pub steps: u64,
    pub sync_us: f64,
    pub bytes: u64,
    pub messages: u64,
}

impl RankSync {
    /// Mean milliseconds a step: the sync, the part its own bytes need at `rate` bit/s with
    /// `alpha` s a message (moving), and the rest (waiting for the slowest peer).
    pub fn split(&self, rate: f64, alpha: f64) -> (f64, f64, f64) {
        let n = self.steps.max(1) as f64;
        let sync = self.sync_us * 1e-3 / n;
        let moving = (8.0 * self.bytes as f64 / rate + self.messages as f64 * alpha) * 1e3 / n;
        (sync, moving.min(sync), (sync - moving).max(0.0))
    }
}

/// Every rank's syncs in `trace`, from the all-reduce spans of its first replica.
pub fn rank_syncs(trace: &Value) -> Vec<RankSync> {
    let events = trace["traceEvents"].as_array().map_or(&[][..], |v| &v[..]);
    let mut first_track: BTreeMap<u64, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        if let (Some(p), Some(t)) = (e["pid"].as_u64(), e["tid"].as_u64()) {
            if t < crate::train::watch::GPU_TRACK as u64 {
                let f = first_track.entry(p).or_insert(t);
                *f = (*f).min(t);
            }
        }
    }
    let mut by_rank: BTreeMap<u64, (RankSync, std::collections::BTreeSet<u64>)> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let (Some(name), Some(p), Some(t)) =
            (e["name"].as_str(), e["pid"].as_u64(), e["tid"].as_u64())
        else {
            continue;
        };
        if !name.starts_with("all-reduce") || first_track.get(&p) != Some(&t) {
            continue;
        }
        let (r, steps) = by_rank.entry(p).or_insert_with(|| {
            (
                RankSync {
                    rank: p,
                    ..RankSync::default()
                },
                Default::default(),
            )
        });
        r.sync_us += e["dur"].as_f64().unwrap_or(0.0);
        r.bytes += e["args"]["bytes_sent"].as_u64().unwrap_or(0);
        r.messages += e["args"]["messages"].as_u64().unwrap_or(0);
        if let Some(s) = e["args"]["step"].as_u64() {
            steps.insert(s);
        }
    }
    by_rank
        .into_values()
        .map(|(mut r, steps)| {
            r.steps = steps.len() as u64;
            r
        })
        .collect()
}

/// A curve of (ms, %) points.
pub type Curve = Vec<(f64, f64)>;

/// One traced step as its NIC saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WireStep {
    pub step: u64,
    /// What the all-reduce reported sending (its payload).
    pub payload: u64,
    /// What the NIC sent meanwhile, headers and ACKs included, and in how many packets.
    pub wire: u64,
    pub packets: u64,
    /// Mean utilisation of the line rate over the step (compute and sync), 0 to 1.
    pub mean_busy: f64,
    /// Milliseconds of the step the NIC sent at 90 % of line rate or more.
    pub ms_near_line_rate: f64,
    pub retransmits: u64,
}

impl WireStep {
    /// Bytes on the wire beyond the payload, as a share of the payload.
    pub fn overhead(&self) -> f64 {
        self.wire as f64 / self.payload.max(1) as f64 - 1.0
    }
}

/// The window utilisation is measured over: the NIC is sampled every millisecond, but a shaped
/// link passes bursts (the lab's tc tbf lets 1/100 s of traffic through at once), so a 1 ms
/// sample reads 0 % or several times the line rate; over 10 ms the rate is the link's.
pub const WINDOW_US: f64 = 10_000.0;

/// The window the measured utilisation is read over: a few a step (an eighth of the median
/// traced step), from 1 ms (the sampler's period) to [`WINDOW_US`], so the idle-then-busy shape
/// of a step shows even when a step is shorter than 10 ms.
pub fn window_for(steps: &[TracedStep]) -> f64 {
    let mut lengths: Vec<f64> = steps
        .iter()
        .map(|s| s.compute_us + s.allreduce_us)
        .collect();
    lengths.sort_by(f64::total_cmp);
    lengths
        .get(lengths.len() / 2)
        .map_or(WINDOW_US, |m| (m / 8.0).clamp(1000.0, WINDOW_US))
}

/// The NIC's utilisation of `rate` bit/s over [t, t + window), from its counters.
fn busy_over(nic: &NicTrack, t: f64, rate: f64, window: f64) -> f64 {
    let bytes = nic.at(t + window).tx.saturating_sub(nic.at(t).tx);
    8.0 * bytes as f64 / (window * 1e-6) / rate
}

/// The whole `window`-long windows from `start` up to `end` in which the NIC's counters moved,
/// as (window start µs, utilisation of `rate`), in time order; every other window was idle.
/// Found from the samples, not by walking every window: a trace whose step spans days costs
/// its samples, not its length.
fn busy_windows(
    nic: &NicTrack,
    (start, end): (f64, f64),
    rate: f64,
    window: f64,
) -> impl Iterator<Item = (f64, f64)> + '_ {
    let windows = ((end - start) / window).floor().max(0.0);
    // A window [t, t + W) counts the samples in (t, t + W].
    let first = nic.totals.partition_point(|(t, _)| *t <= start);
    let mut ks: Vec<f64> = nic.totals[first..]
        .iter()
        .map(|(t, _)| ((t - start) / window).ceil() - 1.0)
        .take_while(|&k| k < windows)
        .collect();
    ks.dedup();
    ks.into_iter().filter_map(move |k| {
        let t = start + k * window;
        let busy = busy_over(nic, t, rate, window);
        (busy > 0.0).then_some((t, busy))
    })
}

/// Each traced step (window: its start to the next step's start, or its own end for the last)
/// on `nic`, at a line rate of `rate` bit/s, its time near line rate counted in windows of
/// `window` µs.
pub fn per_step(steps: &[TracedStep], nic: &NicTrack, rate: f64, window: f64) -> Vec<WireStep> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let start = s.start_us;
            let end = steps
                .get(i + 1)
                .map_or(start + s.compute_us + s.allreduce_us, |n| n.start_us);
            let (a, b) = (nic.at(start), nic.at(end));
            let wire = b.tx.saturating_sub(a.tx);
            let seconds = ((end - start) * 1e-6).max(1e-9);
            // Windows at 90 % of the line rate or more.
            let near = busy_windows(nic, (start, end), rate, window)
                .filter(|&(_, busy)| busy >= 0.9)
                .count() as f64
                * window
                * 1e-3;
            WireStep {
                step: s.step,
                payload: s.bytes_sent,
                wire,
                packets: b.tx_packets.saturating_sub(a.tx_packets),
                mean_busy: (8.0 * wire as f64 / seconds / rate).min(1.0),
                ms_near_line_rate: near,
                retransmits: b.retransmits.saturating_sub(a.retransmits),
            }
        })
        .collect()
}

/// The NIC's measured utilisation (%, over consecutive windows of `window` µs) across the
/// traced steps as (ms since the first step's start, %) points, and the model's pulses for
/// the same steps: `height[i]` (1 = line rate) from the end of each step's compute for
/// `sync_s[i]` seconds, 0 otherwise.
pub fn utilisation_curves(
    steps: &[TracedStep],
    (sync_s, height): (&[f64], &[f64]),
    nic: &NicTrack,
    rate: f64,
    window: f64,
) -> (Curve, Curve) {
    let Some(first) = steps.first() else {
        return (Vec::new(), Vec::new());
    };
    let from = first.start_us;
    let last = steps.last().expect("non-empty");
    let to = last.start_us + last.compute_us + last.allreduce_us;
    // A step function: each window's rate across the window, 0 where the counters did not
    // move (two points span a run of idle windows, however long).
    let mut measured: Curve = Vec::new();
    let mut next = from;
    for (t, busy) in busy_windows(nic, (from, to), rate, window) {
        if t > next {
            measured.extend([((next - from) * 1e-3, 0.0), ((t - from) * 1e-3, 0.0)]);
        }
        let u = 100.0 * busy;
        measured.extend([((t - from) * 1e-3, u), ((t - from + window) * 1e-3, u)]);
        next = t + window;
    }
    let end = from + ((to - from) / window).floor() * window;
    if end > next {
        measured.extend([((next - from) * 1e-3, 0.0), ((end - from) * 1e-3, 0.0)]);
    }
    let mut model = vec![(0.0, 0.0)];
    for ((s, &sync), &h) in steps.iter().zip(sync_s).zip(height) {
        let on = (s.start_us + s.compute_us - from) * 1e-3;
        let off = on + sync * 1e3;
        let u = 100.0 * h;
        model.extend([(on, 0.0), (on, u), (off, u), (off, 0.0)]);
    }
    (measured, model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(
        step: u64,
        start_us: f64,
        compute_us: f64,
        allreduce_us: f64,
        bytes: u64,
    ) -> TracedStep {
        TracedStep {
            step,
            start_us,
            compute_us,
            allreduce_us,
            bytes_sent: bytes,
            peers: 2,
            messages: 2,
        }
    }

    #[test]
    fn a_step_reads_the_counters_at_its_edges() {
        // A NIC that sends 1,000 bytes a ms in 1 packet, at line rate (8 Mbit/s) from 10 ms.
        let mut events = Vec::new();
        for ms in 0..40u64 {
            let sent = ms.saturating_sub(10) * 1000;
            events.push(
                json!({"ph": "C", "pid": 0, "name": "NIC eth0 (measured), bytes",
                "ts": ms as f64 * 1000.0,
                "args": {"tx": sent, "tx_packets": sent / 1000, "tcp_retransmits": ms / 20}}),
            );
            let mbit = if ms >= 10 { 8.0 } else { 0.0 };
            events.push(
                json!({"ph": "C", "pid": 0, "name": "NIC eth0 (measured), Mbit/s",
                "ts": ms as f64 * 1000.0, "args": {"tx": mbit, "rx": 0.0}}),
            );
        }
        let tracks = nic_tracks(&json!({ "traceEvents": events }));
        assert_eq!(tracks.len(), 1);
        let steps = [
            step(0, 0.0, 10_000.0, 10_000.0, 9_000),
            step(1, 20_000.0, 5_000.0, 5_000.0, 9_000),
        ];
        let w = per_step(&steps, &tracks[0], 8e6, WINDOW_US);
        // Step 0: 0 to 20 ms, sending from 10 ms: 10,000 bytes, 10 packets, busy half the step.
        assert_eq!((w[0].wire, w[0].packets, w[0].retransmits), (10_000, 10, 1));
        assert!((w[0].mean_busy - 0.5).abs() < 1e-9, "{w:?}");
        // Two 10 ms windows: 0-10 idle, 10-20 at line rate.
        assert!((w[0].ms_near_line_rate - 10.0).abs() < 1e-9, "{w:?}");
        assert!((w[0].overhead() - (10_000.0 / 9_000.0 - 1.0)).abs() < 1e-12);
        // Step 1: 20 to 30 ms (its own end), all of it at line rate.
        assert_eq!(w[1].wire, 10_000);
        assert!((w[1].mean_busy - 1.0).abs() < 1e-9, "{w:?}");
        let (measured, model) = utilisation_curves(
            &steps,
            (&[0.01, 0.005], &[1.0, 1.0]),
            &tracks[0],
            8e6,
            WINDOW_US,
        );
        assert_eq!(measured.first(), Some(&(0.0, 0.0)));
        assert!(measured.contains(&(10.0, 100.0)), "{measured:?}");
        assert_eq!(
            model[1..5],
            [(10.0, 0.0), (10.0, 100.0), (20.0, 100.0), (20.0, 0.0)]
        );
    }

    #[test]
    fn each_rank_s_sync_splits_into_moving_and_waiting() {
        // Rank 0 (replicas 0, 1: only its first is read) and rank 1 (replica 2), 2 steps each,
        // 1,250 bytes a step in 1 message: 1 ms at 10 Mbit/s.
        let span = |pid: u64, tid: u64, step: u64, dur: f64| {
            json!({"ph": "X", "name": "all-reduce: hidden layer", "pid": pid, "tid": tid, "ts": 0.0,
                "dur": dur, "args": {"bytes_sent": 1250, "messages": 1, "step": step}})
        };
        let trace = json!({"traceEvents": [
            span(0, 0, 0, 1000.0), span(0, 0, 1, 3000.0), span(0, 1, 0, 9e9),
            span(1, 2, 0, 5000.0), span(1, 2, 1, 5000.0),
        ]});
        let ranks = rank_syncs(&trace);
        assert_eq!(ranks.len(), 2);
        assert_eq!((ranks[0].steps, ranks[0].bytes), (2, 2500));
        // Rank 0: 2 ms a step, 1 ms of it moving; rank 1: 5 ms, 4 of them waiting.
        assert_eq!(ranks[0].split(1e7, 0.0), (2.0, 1.0, 1.0));
        assert_eq!(ranks[1].split(1e7, 0.0), (5.0, 1.0, 4.0));
        // With 0.5 ms a message of latency, the move takes 1.5 ms.
        assert_eq!(ranks[1].split(1e7, 5e-4), (5.0, 1.5, 3.5));
    }
}
