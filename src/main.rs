//! The `gpu-train` binary: parse the command line, run it, map errors to an exit code.

use clap::Parser;
use gpu_train::{cli, Error};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(&args) {
        eprintln!("gpu-train: {e}");
        // 2: the input was wrong (flags, data, adapter choice); 1: something failed while running.
        let code = match e {
            Error::Config(_)
            | Error::BadData { .. }
            | Error::Io { .. }
            | Error::Adapter(_)
            | Error::Snapshot { .. } => 2,
            _ => 1,
        };
        std::process::exit(code);
    }
}
