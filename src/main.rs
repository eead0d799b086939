//! The `gpu-train` binary: parse the command line, run it, map errors to an exit code.

use clap::Parser as _;
use gpu_train::cli;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, like every other refusal: clap's first line, without its "error: ".
            // clap's message up to its blank line, joined into one line, without "error: ".
            let text = e.render().to_string();
            let joined = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let line = joined.strip_prefix("error: ").unwrap_or(&joined);
            let hint = if line.contains("invalid digit") && line.contains("'-") {
                " (a count: a whole number, not negative)"
            } else {
                ""
            };
            eprintln!("gpu-train: {line}{hint}; see gpu-train --help");
            std::process::exit(2);
        }
    };
    if args.command.is_some() {
        // A subcommand only prints: when its reader goes away (`gpu-train devices | head`)
        // it ends quietly, as Unix tools do, instead of panicking on the broken pipe. (Rust
        // ignores SIGPIPE; a training run keeps ignoring it, so its snapshots are written.)
        // SAFETY: setting a signal's disposition to its default, before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Err(e) = cli::run(&args) {
        eprintln!("gpu-train: {e}");
        std::process::exit(e.exit_code());
    }
}
