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
            // One line, like every other refusal: clap's message, its tip, and the --help of
            // the command it was parsing.
            gpu_train::error::say_error(&cli::usage::one_line(&e));
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
    mesa_cache_guard();
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
        gpu_train::error::say_error(&e.to_string());
        std::process::exit(e.exit_code());
    }
}

/// The least free space Mesa's shader cache folder must have for the cache to stay on.
const MESA_CACHE_MIN_FREE: u64 = 64 << 20;

/// Mesa's shader cache (lavapipe and the other Mesa drivers) maps an index file of about 1.3 MB
/// into memory in `$MESA_SHADER_CACHE_DIR`, or `$XDG_CACHE_HOME/mesa_shader_cache`, or
/// `~/.cache/mesa_shader_cache`; on a full file system the first store into that mapping kills
/// the process with a bare "Bus error". It is only a cache: when the folder (or the nearest
/// folder above it that exists) has less than [`MESA_CACHE_MIN_FREE`] free, the cache is
/// turned off for this run (`MESA_SHADER_CACHE_DISABLE`, read when a device opens) and a
/// warning says so; shaders then compile afresh each run. Before any thread exists.
fn mesa_cache_guard() {
    use std::path::PathBuf;
    if std::env::var_os("MESA_SHADER_CACHE_DISABLE").is_some() {
        return;
    }
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let Some(dir) = var("MESA_SHADER_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("mesa_shader_cache")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("mesa_shader_cache")))
    else {
        return;
    };
    let Some(existing) = dir.ancestors().find(|d| d.is_dir()) else {
        return;
    };
    let Some(free) = free_bytes(existing) else {
        return;
    };
    if free < MESA_CACHE_MIN_FREE {
        log::warn!(
            "{} has {:.1} MB free, too little for Mesa's shader cache: the cache is off for this run (shaders compile afresh)",
            existing.display(),
            free as f64 / 1e6
        );
        // SAFETY: before any thread exists; nothing reads the environment concurrently.
        std::env::set_var("MESA_SHADER_CACHE_DISABLE", "true");
    }
}

/// Bytes an unprivileged user may still write on the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid C string and a buffer statvfs fills.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
