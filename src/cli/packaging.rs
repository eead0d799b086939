//! What a package or a user's shell needs beside the binary: completion scripts
//! (`gpu-train completions bash`) and manual pages (`gpu-train man`), both written by clap's
//! own companions (clap_complete, clap_mangen) from the same definitions as `--help`, so they
//! cannot drift from the flags.

use crate::error::{Error, Result};
use clap::Args;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write the pages into DIR (gpu-train.1, and gpu-train-predict.1 and so on for the
    /// subcommands, created if need be) instead of printing gpu-train.1 to stdout.
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script of `cmd` (the whole command line) for one shell.
pub fn completions(mut cmd: clap::Command, args: &CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "gpu-train", &mut script);
    print_bytes(&script)
}

/// Prints `cmd`'s manual page, or writes one page per command into --out.
pub fn man(cmd: clap::Command, args: &ManArgs) -> Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Built once: each subcommand then knows its display name (gpu-train-predict).
    cmd.build();
    let Some(dir) = &args.out else {
        return print_bytes(&page(&cmd)?);
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Config(format!(
            "--out {}: cannot create the folder: {e}",
            dir.display()
        ))
    })?;
    write_pages(&cmd, dir)
}

/// Writes `cmd`'s page and its visible subcommands' pages into `dir`, each file replaced whole.
fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    crate::files::write_file(&path, &page(cmd)?, "the manual page", "the earlier page is untouched")?;
    println!("{}", path.display());
    Ok(())
}

/// One command's manual page, as roff.
fn page(cmd: &clap::Command) -> Result<Vec<u8>> {
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut roff)
        .map_err(|e| Error::Config(format!("cannot render the manual page: {e}")))?;
    Ok(roff)
}

/// Writes to stdout; a reader gone away (`| head`) is the reader's choice, not an error.
fn print_bytes(bytes: &[u8]) -> Result<()> {
    let _ = std::io::stdout().lock().write_all(bytes);
    Ok(())
}
