//! `gpu-train plot`: metrics files (`--metrics`, one JSON line per epoch and every K steps)
//! drawn as pictures of loss and accuracy, by epoch and by step; several files overlaid.

use super::metrics::{self, Point, PointKind};
use super::plot;
use crate::error::{Error, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Metrics files written by --metrics: one, or several to lay over each other (each
    /// series then named after its file).
    #[arg(required = true, num_args = 1..)]
    pub metrics: Vec<PathBuf>,
    /// Folder for the pictures.
    #[arg(short, long, default_value = "plots")]
    pub out: PathBuf,
}

/// One metrics file's curves: (step loss, step accuracy, epoch train loss, epoch test loss,
/// epoch test accuracy).
type Curves = [Vec<(f64, f64)>; 5];

fn curves(path: &std::path::Path) -> Result<Curves> {
    let records = metrics::read_points(path)?;
    let series = |kind: PointKind, y: fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> {
        let x = |p: &Point| match kind {
            PointKind::Step => p.global_step,
            _ => p.epoch,
        };
        records
            .iter()
            .filter(|p| p.kind == kind)
            .filter_map(|p| Some((x(p)?, y(p)?)))
            .collect()
    };
    let c = [
        series(PointKind::Step, |p| p.train_loss),
        series(PointKind::Step, |p| p.train_accuracy),
        series(PointKind::Epoch, |p| p.train_loss),
        series(PointKind::Epoch, |p| p.test_loss),
        series(PointKind::Epoch, |p| p.test_accuracy),
    ];
    if c[3].is_empty() && c[0].is_empty() {
        return Err(Error::bad_data(path.display().to_string(), "holds no step or epoch records with losses to draw"));
    }
    Ok(c)
}

pub fn run_plot(a: &PlotArgs) -> Result<()> {
    let inputs: Vec<(&str, &std::path::Path)> = a.metrics.iter().map(|m| ("a metrics file", m.as_path())).collect();
    crate::files::check_paths(&inputs, &[crate::files::Output::Pictures("--out", &a.out)])?;
    let files: Vec<(String, Curves)> = a
        .metrics
        .iter()
        .map(|m| Ok((m.file_stem().map_or("metrics".into(), |s| s.to_string_lossy().into_owned()), curves(m)?)))
        .collect::<Result<_>>()?;
    // Series `what` of every file: named `what` alone for one file, `file: what` for several.
    let several = files.len() > 1;
    let pick = |i: usize, what: &str| -> Vec<plot::Series> {
        files
            .iter()
            .filter(|(_, c)| !c[i].is_empty())
            .map(|(name, c)| (if several { format!("{name}: {what}") } else { what.to_string() }, c[i].clone()))
            .collect()
    };
    let charts: [(&str, &str, (&str, &str), Vec<plot::Series>); 4] = [
        ("loss-by-epoch", "loss by epoch", ("epoch", "cross-entropy loss"), [pick(2, "train"), pick(3, "test")].concat()),
        ("accuracy-by-epoch", "test accuracy by epoch", ("epoch", "accuracy (%)"), pick(4, "test")),
        ("loss-by-step", "training loss by step", ("global step", "loss (since the previous point)"), pick(0, "train loss")),
        ("accuracy-by-step", "training accuracy by step", ("global step", "accuracy (%)"), pick(1, "train accuracy")),
    ];
    let mut made = Vec::new();
    let mut drawn = || -> Result<()> {
        for (name, title, axes, series) in &charts {
            if !series.is_empty() {
                made.extend(plot::line_chart(&a.out, name, title, *axes, series)?);
            }
        }
        Ok(())
    };
    if let Err(e) = drawn() {
        // All the pictures or none: the ones drawn before the failure go too.
        for p in &made {
            let _ = std::fs::remove_file(p);
        }
        let what = a.metrics.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(match e {
            Error::Config(m) if !m.starts_with("-o ") => Error::bad_data(what, m),
            e => e,
        });
    }
    for p in made {
        println!("picture: {}", p.display());
    }
    Ok(())
}
