//! The lab's fabric as a picture (`gpu-train network --topology`): hosts with their ranks and
//! NIC rates, the switches (one, or leaves under a spine, with the uplinks' rates) and the
//! ring's order, from the `topology.json` that `scripts/lab` writes.

use super::plot::both;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// A lab's fabric, as `scripts/lab` writes it to `topology.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Fabric {
    pub hosts: usize,
    pub leaves: usize,
    pub host_rate: String,
    pub uplink_rate: String,
    /// The straggler, host number (from 1) and its rate.
    #[serde(default)]
    pub slow_host: Option<(usize, String)>,
    #[serde(default)]
    pub loss_percent: Option<f64>,
    /// How the hosts are spread over the leaves: "block" (h1..hk on leaf 1, ...) or "rr"
    /// (round robin: host i on leaf (i − 1) mod L + 1, so every hop of the ring crosses leaves).
    #[serde(default)]
    pub placement: Option<String>,
    /// A routed leaf-spine's spines (each leaf has a link to each), and its ECMP hash.
    #[serde(default)]
    pub spines: Option<usize>,
    #[serde(default)]
    pub hash: Option<String>,
}

/// What the lab's link counters said of one link, to write on the picture: bytes each way and
/// the busiest window's utilisation each way.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkLoad {
    pub tx: u64,
    pub rx: u64,
    pub peak_tx: f64,
    pub peak_rx: f64,
}

/// Link name (`h1`, `l1-s2`) → its load.
pub type Loads = std::collections::BTreeMap<String, LinkLoad>;

impl LinkLoad {
    /// Two lines: away from the host or leaf (↑), and towards it (↓): bytes, busiest window.
    fn lines(&self) -> [String; 2] {
        [
            format!(
                "↑ {:.1} MB, {:.0} %",
                self.tx as f64 / 1e6,
                100.0 * self.peak_tx
            ),
            format!(
                "↓ {:.1} MB, {:.0} %",
                self.rx as f64 / 1e6,
                100.0 * self.peak_rx
            ),
        ]
    }
}

/// A link's load written beside it: two lines at `at`, to the left of the link (ending there)
/// or to its right.
fn load_text<DB: DrawingBackend>(l: &LinkLoad, at: (i32, i32), left: bool, out: &mut Drawn<DB>) {
    for (k, line) in l.lines().into_iter().enumerate() {
        let x = if left { at.0 - 92 } else { at.0 + 6 };
        let font = ("sans-serif", 11).into_font().color(&RING);
        out.push(Text::new(line, (x, at.1 + 13 * k as i32), font).into_dyn());
    }
}

impl Fabric {
    /// Refuses a fabric no lab builds (and no picture could hold).
    pub fn check(&self) -> Result<()> {
        if !(2..=64).contains(&self.hosts) || !(1..=self.hosts).contains(&self.leaves) {
            return Err(Error::Config(format!(
                "hosts {} and leaves {}: the lab builds 2 to 64 hosts on 1 leaf up to one a host",
                self.hosts, self.leaves
            )));
        }
        let mut rates = vec![
            ("host_rate", &self.host_rate),
            ("uplink_rate", &self.uplink_rate),
        ];
        if let Some((h, r)) = &self.slow_host {
            if !(1..=self.hosts).contains(h) {
                return Err(Error::Config(format!(
                    "slow_host {h}: hosts are 1 to {}",
                    self.hosts
                )));
            }
            rates.push(("slow_host's rate", r));
        }
        for (what, r) in rates {
            // tc's notation, as the lab takes it (and short enough to label a link).
            let ok = r.len() <= 16 && super::link::parse_rate(r).is_ok();
            if !ok {
                return Err(Error::Config(format!(
                    "{what} {r:?} is not a rate such as 100mbit"
                )));
            }
        }
        if let Some(p) = self
            .placement
            .as_deref()
            .filter(|p| !["block", "rr"].contains(p))
        {
            return Err(Error::Config(format!("placement {p:?}: block or rr")));
        }
        if let Some(p) = self.loss_percent.filter(|p| !(0.0..=20.0).contains(p)) {
            return Err(Error::Config(format!(
                "loss_percent {p}: the lab loses 0 to 20 %"
            )));
        }
        Ok(())
    }

    /// The leaf of host `i` (from 1), as scripts/lab spreads them (--placement).
    fn leaf_of(&self, i: usize) -> usize {
        match self.placement.as_deref() {
            Some("rr") => (i - 1) % self.leaves + 1,
            _ => (i - 1) * self.leaves / self.hosts + 1,
        }
    }
}

/// `DIR/topology.{png,svg}`: the hosts, their NICs and rates, the switches (one, or leaves
/// under a spine, with the uplinks' rates) and the ring's order, as the lab built them.
pub fn topology(dir: &Path, f: &Fabric, loads: Option<&Loads>) -> Result<Vec<PathBuf>> {
    f.check()?;
    both(
        dir,
        "topology",
        (1000, 520),
        &|a| fabric(a, f, loads),
        &|a| fabric(a, f, loads),
    )
}

/// Where a fabric's parts go in its picture: rows for the spine, the leaves and the hosts.
struct Layout {
    w: f64,
    h: f64,
    spine_y: f64,
    leaf_y: f64,
    host_y: f64,
    hosts: usize,
    leaves: usize,
}

impl Layout {
    fn of(f: &Fabric) -> Self {
        let (spine_y, leaf_y, host_y) = if f.leaves > 1 {
            (90.0, 220.0, 380.0)
        } else {
            (0.0, 160.0, 360.0)
        };
        Layout {
            w: 1000.0,
            h: 520.0,
            spine_y,
            leaf_y,
            host_y,
            hosts: f.hosts,
            leaves: f.leaves,
        }
    }
    fn x_of_host(&self, i: usize) -> i32 {
        (self.w * (i as f64 - 0.5) / self.hosts as f64) as i32
    }
    fn x_of_leaf(&self, l: usize) -> i32 {
        (self.w * (l as f64 - 0.5) / self.leaves as f64) as i32
    }
    fn x_of_spine(&self, s: usize, spines: usize) -> i32 {
        (self.w * (s as f64 - 0.5) / spines as f64) as i32
    }
    /// Half a box's width when `n` of them share the width (64 hosts fit across).
    fn half(&self, n: usize) -> i32 {
        ((self.w / n as f64) / 2.0 - 3.0).min(55.0) as i32
    }
}

type Drawn<DB> = Vec<DynElement<'static, DB, (i32, i32)>>;

/// A labelled box centred on (x, y), `half` wide each side; narrow boxes get smaller labels.
fn boxed<DB: DrawingBackend>(x: i32, y: f64, half: i32, label: &str, fill: RGBColor) -> Drawn<DB> {
    let y = y as i32;
    let size = if half < 40 { 11 } else { 15 };
    vec![
        Rectangle::new([(x - half, y - 18), (x + half, y + 18)], fill.filled()).into_dyn(),
        Rectangle::new(
            [(x - half, y - 18), (x + half, y + 18)],
            BLACK.stroke_width(1),
        )
        .into_dyn(),
        Text::new(
            label.to_string(),
            (x - half + 4, y - 8),
            ("sans-serif", size).into_font(),
        )
        .into_dyn(),
    ]
}

const LINK: RGBColor = RGBColor(120, 120, 120);
const SLOW: RGBColor = RGBColor(200, 60, 30);
const RING: RGBColor = RGBColor(40, 140, 60);
const SWITCH: RGBColor = RGBColor(235, 235, 235);
const HOST: RGBColor = RGBColor(220, 230, 245);

fn fabric<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    f: &Fabric,
    loads: Option<&Loads>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| Error::Config(format!("drawing: {x:?}"));
    let title = match f.leaves {
        1 => format!(
            "{} hosts on one switch; the ring in host order (arrows)",
            f.hosts
        ),
        l => match f.spines {
            Some(s) => format!(
                "{} hosts on {l} routed leaves, {s} spine{} (ECMP, {} hash); the ring in host order (arrows)",
                f.hosts,
                if s == 1 { "" } else { "s" },
                f.hash.as_deref().unwrap_or("l4")
            ),
            None => format!(
                "{} hosts on {l} leaf switches under a spine; the ring in host order (arrows)",
                f.hosts
            ),
        },
    };
    let font = ("sans-serif", 20).into_font().color(&BLACK);
    area.draw(&Text::new(title, (20, 14), font)).map_err(e)?;
    let lay = Layout::of(f);
    let mut drawn: Drawn<DB> = Vec::new();
    fabric_links(f, &lay, loads, &mut drawn);
    fabric_boxes(f, &lay, &mut drawn);
    fabric_ring(f, &lay, &mut drawn);
    for el in &drawn {
        area.draw(el).map_err(e)?;
    }
    Ok(())
}

/// Every host's link to its switch (the straggler's in red), with its rate where there is
/// room; the uplinks to the spines with theirs; and, from the lab's counters, each link's bytes
/// and busiest window each way (↑ away from the host or leaf, ↓ towards it).
fn fabric_links<DB: DrawingBackend>(
    f: &Fabric,
    lay: &Layout,
    loads: Option<&Loads>,
    out: &mut Drawn<DB>,
) {
    let (leaf_y, host_y) = (lay.leaf_y as i32, lay.host_y as i32);
    let load = |name: &str| loads.and_then(|l| l.get(name));
    for i in 1..=f.hosts {
        let (hx, lx) = (lay.x_of_host(i), lay.x_of_leaf(f.leaf_of(i)));
        let slowed = f.slow_host.as_ref().filter(|(s, _)| *s == i);
        let colour = if slowed.is_some() { SLOW } else { LINK };
        let line = [(hx, host_y - 18), (lx, leaf_y + 18)];
        out.push(PathElement::new(line, colour.stroke_width(2)).into_dyn());
        // Each link's rate where there is room (8 hosts or fewer), else only the straggler's.
        if f.hosts <= 8 || slowed.is_some() {
            let rate = slowed.map_or(f.host_rate.as_str(), |(_, r)| r.as_str());
            let at = ((hx + lx) / 2 + 4, (host_y + leaf_y) / 2);
            let font = ("sans-serif", 13).into_font().color(&colour);
            out.push(Text::new(rate.to_string(), at, font).into_dyn());
            if let Some(l) = load(&format!("h{i}")) {
                let mid = ((hx + lx) / 2, (host_y + leaf_y) / 2 + 16);
                load_text(l, mid, hx < lx, out);
            }
        }
    }
    if f.leaves > 1 {
        let spines = f.spines.unwrap_or(1);
        let spine_y = lay.spine_y as i32;
        for l in 1..=f.leaves {
            for s in 1..=spines {
                let (lx, sx) = (lay.x_of_leaf(l), lay.x_of_spine(s, spines));
                let line = [(lx, leaf_y - 18), (sx, spine_y + 18)];
                out.push(PathElement::new(line, LINK.stroke_width(3)).into_dyn());
                // Labels a quarter of the way up from the leaf (links from one leaf fan out from
                // there), on the side the link leans to.
                let at = ((3 * lx + sx) / 4, (3 * leaf_y + spine_y) / 4 - 8);
                let left = sx < lx || (sx == lx && s == 1);
                match f.spines.and_then(|_| load(&format!("l{l}-s{s}"))) {
                    Some(ld) => load_text(ld, at, left, out),
                    None => {
                        let label = format!("uplink {}", f.uplink_rate);
                        let x = if left { at.0 - 92 } else { at.0 + 6 };
                        out.push(
                            Text::new(label, (x, at.1), ("sans-serif", 12).into_font()).into_dyn(),
                        );
                    }
                }
            }
        }
    }
}

/// The switches and the hosts (with their ranks where there is room).
fn fabric_boxes<DB: DrawingBackend>(f: &Fabric, lay: &Layout, out: &mut Drawn<DB>) {
    if f.leaves > 1 {
        let spines = f.spines.unwrap_or(1);
        for s in 1..=spines {
            let name = match f.spines {
                Some(_) => format!("spine {s}"),
                None => "spine".to_string(),
            };
            let half = lay.half(spines).min(55);
            out.extend(boxed(
                lay.x_of_spine(s, spines),
                lay.spine_y,
                half,
                &name,
                SWITCH,
            ));
        }
    }
    for l in 1..=f.leaves {
        let name = if f.leaves > 1 {
            format!("leaf {l}")
        } else {
            "switch".to_string()
        };
        out.extend(boxed(
            lay.x_of_leaf(l),
            lay.leaf_y,
            lay.half(f.leaves),
            &name,
            SWITCH,
        ));
    }
    let half = lay.half(f.hosts);
    for i in 1..=f.hosts {
        let label = match half {
            40.. => format!("h{i}  rank {}", i - 1),
            _ => format!("h{i}"),
        };
        out.extend(boxed(lay.x_of_host(i), lay.host_y, half, &label, HOST));
    }
}

/// The ring under the hosts: h1 → h2 → … → hN, and back from hN to h1; and a note.
fn fabric_ring<DB: DrawingBackend>(f: &Fabric, lay: &Layout, out: &mut Drawn<DB>) {
    let below = lay.host_y as i32 + 40;
    let arrow = |x: i32, y: i32, up: bool| -> DynElement<'static, DB, (i32, i32)> {
        let head = if up {
            vec![(x - 5, y + 8), (x, y), (x + 5, y + 8)]
        } else {
            vec![(x - 8, y - 5), (x, y), (x - 8, y + 5)]
        };
        Polygon::new(head, RING.filled()).into_dyn()
    };
    for i in 1..f.hosts {
        let (a, b) = (lay.x_of_host(i), lay.x_of_host(i + 1));
        out.push(PathElement::new([(a, below), (b - 8, below)], RING.stroke_width(2)).into_dyn());
        out.push(arrow(b, below, false));
    }
    let (back, first, last) = (below + 30, lay.x_of_host(1), lay.x_of_host(f.hosts));
    let path = [
        (last, below),
        (last, back),
        (first, back),
        (first, below + 8),
    ];
    out.push(PathElement::new(path, RING.stroke_width(2)).into_dyn());
    out.push(arrow(first, below, true));
    let mut note = format!(
        "hosts' links {}; ring: each host sends to the next, the last to the first",
        f.host_rate
    );
    if let Some(p) = f.loss_percent {
        note += &format!("; every NIC loses {p} % of the TCP packets reaching it");
    }
    let font = ("sans-serif", 14).into_font().color(&RING);
    out.push(Text::new(note, (20, (lay.h - 30.0) as i32), font).into_dyn());
}
