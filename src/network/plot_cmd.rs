//! `gpu-train plot`: a metrics file (`--metrics`, one JSON line per epoch and every K steps)
//! drawn as pictures of loss and accuracy, by epoch and by step.

use super::metrics::{self, Point, PointKind};
use super::plot;
use crate::error::{Error, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// A metrics file written by --metrics.
    pub metrics: PathBuf,
    /// Folder for the pictures.
    #[arg(short, long, default_value = "plots")]
    pub out: PathBuf,
}

pub fn run_plot(a: &PlotArgs) -> Result<()> {
    crate::files::check_paths(
        &[("the metrics file", &a.metrics)],
        &[crate::files::Output::Pictures("--out", &a.out)],
    )?;
    let records = metrics::read_points(&a.metrics)?;
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
    let (step_loss, epoch_train_loss, epoch_test_loss) = (
        series(PointKind::Step, |p| p.train_loss),
        series(PointKind::Epoch, |p| p.train_loss),
        series(PointKind::Epoch, |p| p.test_loss),
    );
    let (step_acc, epoch_test_acc) = (
        series(PointKind::Step, |p| p.train_accuracy),
        series(PointKind::Epoch, |p| p.test_accuracy),
    );
    if epoch_test_loss.is_empty() && step_loss.is_empty() {
        return Err(Error::bad_data(
            a.metrics.display().to_string(),
            "holds no step or epoch records with losses to draw",
        ));
    }
    let mut made = Vec::new();
    let mut drawn = || -> Result<()> {
        if !epoch_test_loss.is_empty() || !epoch_train_loss.is_empty() {
            made.extend(plot::line_chart(
                &a.out,
                "loss-by-epoch",
                "loss by epoch",
                ("epoch", "cross-entropy loss"),
                &[
                    ("train".into(), epoch_train_loss.clone()),
                    ("test".into(), epoch_test_loss.clone()),
                ],
            )?);
        }
        if !epoch_test_acc.is_empty() {
            made.extend(plot::line_chart(
                &a.out,
                "accuracy-by-epoch",
                "test accuracy by epoch",
                ("epoch", "accuracy (%)"),
                &[("test".into(), epoch_test_acc.clone())],
            )?);
        }
        if !step_loss.is_empty() {
            made.extend(plot::line_chart(
                &a.out,
                "loss-by-step",
                "training loss by step",
                ("global step", "loss (since the previous point)"),
                &[("train loss".into(), step_loss.clone())],
            )?);
            made.extend(plot::line_chart(
                &a.out,
                "accuracy-by-step",
                "training accuracy by step",
                ("global step", "accuracy (%)"),
                &[("train accuracy".into(), step_acc.clone())],
            )?);
        }
        Ok(())
    };
    if let Err(e) = drawn() {
        // All the pictures or none: the ones drawn before the failure go too.
        for p in &made {
            let _ = std::fs::remove_file(p);
        }
        return Err(match e {
            Error::Config(m) if !m.starts_with("-o ") => {
                Error::bad_data(a.metrics.display().to_string(), m)
            }
            e => e,
        });
    }
    for p in made {
        println!("picture: {}", p.display());
    }
    Ok(())
}
