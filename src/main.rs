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
    // On a machine with no display (a server, CI, a container) Mesa looks for a Wayland
    // display while wgpu lists adapters and opens a device, and libwayland prints "error:
    // XDG_RUNTIME_DIR is invalid or not set in the environment" for each look: errors that are
    // not errors, on a newcomer's first screen. With no display to find, we say where the
    // Wayland display is: a path that cannot exist (/dev/null is no folder), so the look fails
    // quietly; and EGL's surfaceless platform, the one that applies without a display (the GL
    // adapter is still listed). Real errors still print; a user's own display, or own
    // EGL_PLATFORM, is left alone. Child processes (mpirun's ranks) inherit the same.
    let no_display = ["WAYLAND_DISPLAY", "DISPLAY"]
        .iter()
        .all(|v| std::env::var_os(v).is_none());
    if no_display {
        // Before any thread exists: nothing reads the environment concurrently.
        std::env::set_var("WAYLAND_DISPLAY", "/dev/null/no-display");
        if std::env::var_os("EGL_PLATFORM").is_none() {
            std::env::set_var("EGL_PLATFORM", "surfaceless");
        }
    }
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
