//! Every link of a lab's fabric, counted: the byte and packet counters of each host NIC and of
//! each leaf↔spine link, both directions, sampled every millisecond while the job runs
//! (`gpu-train lab-links`, started by `scripts/lab`), and read back beside the trace's steps as a
//! table (each link's bytes, its peak and mean utilisation) and a heat map (links × time,
//! utilisation in colour, the steps marked): what a network engineer reads off a real fabric.
//!
//! The counters of an interface in another network namespace are read from
//! `/proc/PID/net/dev` of a process living in that namespace (the lab leaves a `sleep` in each):
//! one reader, every namespace, no `setns`. Times are wall-clock µs (UNIX epoch), the clock the
//! trace also records its origin in, so the samples and the steps line up.
//!
//! The file, `links.tsv`: `# link NAME RATE_BIT_S` lines naming each link and its line rate,
//! then one line a sample and link whose counters moved: `unix_us NAME tx_bytes rx_bytes
//! tx_packets rx_packets` (counts since the sampler started). A link's `tx` is the direction
//! away from the host or leaf that owns the interface (a host's NIC: host → leaf; a leaf's
//! uplink: leaf → spine), `rx` the other.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One link to sample: its name, where its counters are, its line rate.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    pub name: String,
    pub pid: u32,
    pub iface: String,
    pub rate: f64,
}

/// Parses `NAME=PID:IFACE:RATE` (RATE as `network --link` takes it, e.g. 100mbit).
pub fn parse_spec(s: &str) -> Result<LinkSpec> {
    let bad = || {
        Error::Config(format!(
            "lab-links {s}: expected NAME=PID:IFACE:RATE, e.g. h1=4242:eth0:100mbit"
        ))
    };
    let (name, rest) = s.split_once('=').ok_or_else(bad)?;
    let mut parts = rest.splitn(3, ':');
    let (pid, iface, rate) = (
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    let name_ok = |n: &str| {
        !n.is_empty() && n.len() <= 32 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !name_ok(name) || !name_ok(iface) {
        return Err(bad());
    }
    Ok(LinkSpec {
        name: name.into(),
        pid: pid.parse().map_err(|_| bad())?,
        iface: iface.into(),
        rate: super::link::parse_rate(rate).map_err(|_| bad())?.0,
    })
}

/// The counters of every interface in `/proc/PID/net/dev`: name → (rx bytes, rx packets, tx
/// bytes, tx packets).
fn read_dev(pid: u32) -> Option<BTreeMap<String, [u64; 4]>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let (name, rest) = line.split_once(':')?;
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() >= 10 {
            out.insert(name.trim().to_string(), [v[0], v[1], v[8], v[9]]);
        }
    }
    Some(out)
}

fn unix_us() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Samples `links` every `every` until `stop` is set, writing `links.tsv` to `path` (streamed to
/// a temporary file beside it, renamed into place at the end: memory does not grow with the
/// run, and a stopped sampler leaves a whole file or none).
pub fn sample(
    links: &[LinkSpec],
    every: Duration,
    path: &Path,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    // Every link there to be read before anything is written (a wrong pid or interface would
    // sample nothing until stopped).
    for l in links {
        if !read_dev(l.pid).is_some_and(|d| d.contains_key(&l.iface)) {
            return Err(Error::Config(format!(
                "lab-links {}: no interface {} in the network namespace of process {}",
                l.name, l.iface, l.pid
            )));
        }
    }
    crate::files::write_file_with(
        path,
        "the link counters",
        "an earlier file of that name is untouched",
        |w| {
            for l in links {
                writeln!(w, "# link {} {}", l.name, l.rate)?;
            }
            let mut first: Vec<Option<[u64; 4]>> = vec![None; links.len()];
            // Each link's last reading: when, its counts, whether it was written.
            let mut last: Vec<Option<(f64, [u64; 4], bool)>> = vec![None; links.len()];
            let mut pids: Vec<u32> = links.iter().map(|l| l.pid).collect();
            pids.sort_unstable();
            pids.dedup();
            let mut ending = false;
            loop {
                // The last pass runs after the stop, so the file ends with the final counts.
                ending |= stop.load(std::sync::atomic::Ordering::Relaxed);
                // Each namespace's counters with the moment they were read: on a busy machine
                // the reads of one pass can be milliseconds apart.
                let devs: BTreeMap<u32, _> = pids
                    .iter()
                    .filter_map(|&p| {
                        let d = read_dev(p)?;
                        Some((p, (unix_us(), d)))
                    })
                    .collect();
                for (i, l) in links.iter().enumerate() {
                    let Some((now, c)) = devs
                        .get(&l.pid)
                        .and_then(|(t, d)| Some((*t, d.get(&l.iface)?)))
                    else {
                        continue;
                    };
                    let base = *first[i].get_or_insert(*c);
                    let line = |w: &mut dyn std::io::Write, t: f64, c: &[u64; 4]| {
                        let d = |k: usize| c[k].saturating_sub(base[k]);
                        writeln!(
                            w,
                            "{t:.0}\t{}\t{}\t{}\t{}\t{}",
                            l.name,
                            d(2),
                            d(0),
                            d(3),
                            d(1)
                        )
                    };
                    match last[i] {
                        // Unchanged: remembered, written only if a change follows (so an idle
                        // stretch ends with a sample of its own, and a reader never spreads a
                        // burst's bytes back over it).
                        Some((_, prev, _)) if prev == *c && !ending => {
                            last[i] = Some((now, *c, false));
                        }
                        prev => {
                            if let Some((t, p, false)) = prev {
                                line(w, t, &p)?;
                            }
                            line(w, now, c)?;
                            last[i] = Some((now, *c, true));
                        }
                    }
                }
                if ending {
                    return Ok(());
                }
                std::thread::sleep(every);
            }
        },
    )
}

/// One link's samples: (unix µs, tx bytes, rx bytes), in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkTrack {
    pub name: String,
    pub rate: f64,
    pub samples: Vec<(f64, u64, u64)>,
}

impl LinkTrack {
    /// The (tx, rx) counts at `us`, interpolated between the samples around it: a sampler
    /// that a busy machine kept waiting for a few milliseconds read their bytes all at once,
    /// and stepping would put them all into one window (reading 500 % of line rate in 1 ms).
    /// Only changes are sampled, so a sample that follows an idle stretch is preceded by the
    /// last one before it: the bytes are spread over the gap, never beyond it.
    pub fn at(&self, us: f64) -> (u64, u64) {
        let i = self.samples.partition_point(|s| s.0 <= us);
        match (
            i.checked_sub(1).map(|k| self.samples[k]),
            self.samples.get(i),
        ) {
            (None, _) => (0, 0),
            (Some(a), None) => (a.1, a.2),
            (Some(a), Some(b)) => {
                let f = ((us - a.0) / (b.0 - a.0).max(1e-9)).clamp(0.0, 1.0);
                let lerp = |x: u64, y: u64| x + ((y - x) as f64 * f) as u64;
                (lerp(a.1, b.1), lerp(a.2, b.2))
            }
        }
    }

    /// Bytes each way over the whole file.
    pub fn totals(&self) -> (u64, u64) {
        self.samples.last().map_or((0, 0), |s| (s.1, s.2))
    }
}

/// The most a `links.tsv` may be (it is read whole).
pub const MAX_LINKS_FILE: u64 = 256 << 20;

/// Reads a `links.tsv`: every link, in the order the file names them.
pub fn read(path: &Path) -> Result<Vec<LinkTrack>> {
    let text = crate::files::read_input_text(path, MAX_LINKS_FILE).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |n: usize, why: &str| {
        Error::bad_data(
            path.display().to_string(),
            format!("line {n}: {why}; not a links.tsv that scripts/lab wrote"),
        )
    };
    let mut tracks: Vec<LinkTrack> = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        if let Some(rest) = line.strip_prefix("# link ") {
            let (name, rate) = rest
                .split_once(' ')
                .ok_or_else(|| bad(n, "a link without a rate"))?;
            let rate: f64 = rate
                .parse()
                .map_err(|_| bad(n, "a rate that is not a number"))?;
            if !(rate.is_finite() && (1e3..=1e15).contains(&rate)) {
                return Err(bad(n, "a rate outside 1 kbit/s to 1 Pbit/s"));
            }
            tracks.push(LinkTrack {
                name: name.into(),
                rate,
                samples: Vec::new(),
            });
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 6 {
            return Err(bad(n, "not 6 tab-separated fields"));
        }
        let t: f64 = f[0]
            .parse()
            .map_err(|_| bad(n, "a time that is not a number"))?;
        let num = |k: usize| {
            f[k].parse::<u64>()
                .map_err(|_| bad(n, "a count that is not a whole number"))
        };
        let (tx, rx) = (num(2)?, num(3)?);
        if !t.is_finite() || t < 0.0 {
            return Err(bad(n, "a time that is not from 0 up"));
        }
        let track = tracks
            .iter_mut()
            .find(|l| l.name == f[1])
            .ok_or_else(|| bad(n, "a sample of a link no '# link' line names"))?;
        if track
            .samples
            .last()
            .is_some_and(|s| s.0 > t || s.1 > tx || s.2 > rx)
        {
            return Err(bad(n, "a sample that goes back in time or in its counts"));
        }
        track.samples.push((t, tx, rx));
    }
    if tracks.is_empty() {
        return Err(bad(0, "no links"));
    }
    Ok(tracks)
}

/// One direction of one link over a stretch of time: its bytes, and its peak and mean
/// utilisation over windows of `window_us`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkUse {
    pub name: String,
    pub bytes: u64,
    pub peak: f64,
    pub mean: f64,
}

/// Each link's use each way from `from` to `to` (unix µs), in windows of `window_us`: the
/// rows of the lab's link table and of its heat map (`cells[row][column]`, utilisation).
pub fn utilisation(
    tracks: &[LinkTrack],
    (from, to): (f64, f64),
    window_us: f64,
) -> (Vec<LinkUse>, Vec<Vec<f64>>) {
    let columns = (((to - from) / window_us).ceil().max(1.0) as usize).min(MAX_COLUMNS);
    let window_us = (to - from).max(1.0) / columns as f64;
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    for t in tracks {
        for (dir, pick) in [("tx", 0usize), ("rx", 1)] {
            let count = |us: f64| {
                let c = t.at(us);
                if pick == 0 {
                    c.0
                } else {
                    c.1
                }
            };
            let row: Vec<f64> = (0..columns)
                .map(|k| {
                    let a = from + k as f64 * window_us;
                    let bytes = count(a + window_us).saturating_sub(count(a));
                    8.0 * bytes as f64 / (window_us * 1e-6) / t.rate
                })
                .collect();
            let bytes = count(to).saturating_sub(count(from));
            rows.push(LinkUse {
                name: format!("{} {dir}", t.name),
                bytes,
                peak: row.iter().copied().fold(0.0, f64::max),
                mean: 8.0 * bytes as f64 / ((to - from).max(1.0) * 1e-6) / t.rate,
            });
            cells.push(row);
        }
    }
    (rows, cells)
}

/// The most columns a heat map has (wider stretches get wider windows).
pub const MAX_COLUMNS: usize = 2000;

/// `DIR/link-heatmap.{png,svg}`: one row a link and direction, one column a window, the
/// utilisation in colour (white idle, through orange, to dark red at line rate; purple above
/// it: nothing is clipped), the steps' starts as vertical lines (ms from `from`).
pub fn heatmap(
    dir: &Path,
    title: &str,
    rows: &[LinkUse],
    cells: &[Vec<f64>],
    (span_ms, steps_ms): (f64, &[f64]),
) -> Result<Vec<std::path::PathBuf>> {
    let height = (120 + 22 * rows.len()).min(2000) as u32;
    let what = (title, rows, cells, span_ms, steps_ms);
    super::plot::both(
        dir,
        "link-heatmap",
        (1000, height),
        &|a| draw_heat(a, what),
        &|a| draw_heat(a, what),
    )
}

type Heat<'a> = (&'a str, &'a [LinkUse], &'a [Vec<f64>], f64, &'a [f64]);

fn draw_heat<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::drawing::DrawingArea<DB, plotters::coord::Shift>,
    (title, rows, cells, span_ms, steps_ms): Heat,
) -> Result<()> {
    use plotters::prelude::*;
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| Error::Config(format!("drawing: {x:?}"));
    let n = rows.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(110)
        .build_cartesian_2d(0f64..span_ms.max(1e-3), -0.5f64..n as f64 - 0.5)
        .map_err(e)?;
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("time (ms)")
        .y_labels(n)
        .y_label_formatter(&|y| {
            // Row r is drawn centred on n − 1 − r.
            let i = y.round();
            if (y - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            names
                .get(n.saturating_sub(i as usize + 1))
                .cloned()
                .unwrap_or_default()
        })
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    for (r, row) in cells.iter().enumerate() {
        let y = (n - r - 1) as f64;
        let w = span_ms / row.len().max(1) as f64;
        chart
            .draw_series(row.iter().enumerate().map(|(k, &u)| {
                let x = k as f64 * w;
                Rectangle::new([(x, y - 0.42), (x + w, y + 0.42)], colour(u).filled())
            }))
            .map_err(e)?;
    }
    chart
        .draw_series(steps_ms.iter().map(|&x| {
            PathElement::new(
                [(x, -0.5), (x, n as f64 - 0.5)],
                BLACK.mix(0.6).stroke_width(1),
            )
        }))
        .map_err(e)?;
    Ok(())
}

/// Utilisation to colour: white at 0, orange at half, dark red at line rate, purple above.
fn colour(u: f64) -> plotters::style::RGBColor {
    let lerp = |a: (f64, f64, f64), b: (f64, f64, f64), t: f64| {
        let t = t.clamp(0.0, 1.0);
        plotters::style::RGBColor(
            (a.0 + (b.0 - a.0) * t) as u8,
            (a.1 + (b.1 - a.1) * t) as u8,
            (a.2 + (b.2 - a.2) * t) as u8,
        )
    };
    let (white, orange, red, purple) = (
        (255.0, 255.0, 255.0),
        (250.0, 170.0, 60.0),
        (150.0, 0.0, 0.0),
        (110.0, 0.0, 160.0),
    );
    if u <= 0.5 {
        lerp(white, orange, u / 0.5)
    } else if u <= 1.0 {
        lerp(orange, red, (u - 0.5) / 0.5)
    } else {
        lerp(red, purple, (u - 1.0) / 0.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_at_line_rate_for_half_the_time_reads_100_and_50_percent() {
        // 100 Mbit/s: 12,500 bytes a ms; busy in ms 0-10, idle in ms 10-20.
        let samples = (0..=20)
            .map(|ms| (ms as f64 * 1000.0, 12_500 * ms.min(10), 0))
            .collect();
        let t = LinkTrack {
            name: "h1".into(),
            rate: 1e8,
            samples,
        };
        let (rows, cells) = utilisation(&[t], (0.0, 20_000.0), 5_000.0);
        assert_eq!(rows[0].bytes, 125_000);
        assert!(
            (rows[0].peak - 1.0).abs() < 1e-9 && (rows[0].mean - 0.5).abs() < 1e-9,
            "{rows:?}"
        );
        assert_eq!(cells[0].len(), 4);
        assert!(
            (cells[0][0] - 1.0).abs() < 1e-9 && cells[0][3] == 0.0,
            "{cells:?}"
        );
        assert_eq!(rows[1].bytes, 0);
    }

    #[test]
    fn specs_and_files_that_are_not_the_lab_s_are_refused() {
        assert!(parse_spec("h1=42:eth0:100mbit").is_ok());
        for bad in [
            "h1",
            "h1=x:eth0:1gbit",
            "h/1=1:eth0:1gbit",
            "h1=1:eth0:fast",
            "h1=1:eth0",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }
}
