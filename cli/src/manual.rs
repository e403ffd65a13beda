//! `leadership completions <shell>` and `leadership man`: shell completions and man pages,
//! generated from the same command-line definition as `--help`, so they never disagree with it.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::args::{Cli, Man};
use crate::exit::{Failure, CONFIG, FAILURE};

/// The command line a user types: `--help`'s, without the hidden internal subcommands (the
/// watchdog), which completions would otherwise offer.
fn public_command() -> clap::Command {
    let full = Cli::command();
    debug_assert_eq!(full.get_name(), "leadership");
    let mut public = clap::Command::new("leadership")
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned())
        .subcommand_required(true)
        // `--help` is the way to help; a `help` subcommand would get a page of its own.
        .disable_help_subcommand(true);
    if full.get_version().is_some() {
        public = public.version(env!("CARGO_PKG_VERSION"));
    }
    if let Some(about) = full.get_about() {
        public = public.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        public = public.long_about(about.clone());
    }
    public
}

/// Writes the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<i32, Failure> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut public_command(), "leadership", &mut out);
    write_stdout(&out)
}

/// Writes `leadership(1)` to standard output, or every page (`leadership.1` and one per
/// subcommand, `leadership-run.1`, …) into `--out-dir`.
pub fn man(args: &Man) -> Result<i32, Failure> {
    match &args.out_dir {
        Some(dir) => {
            pages_into(dir).map_err(|e| {
                Failure::new(
                    CONFIG,
                    format!("--out-dir {}: writing man pages: {e}", dir.display()),
                )
            })?;
            Ok(0)
        }
        None => {
            let mut out = Vec::new();
            page(&mut out).map_err(|e| Failure::new(FAILURE, format!("man page: {e}")))?;
            write_stdout(&out)
        }
    }
}

/// The top-level page, with every subcommand listed.
fn page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(public_command()).render(out)
}

/// The top-level page and one page per visible subcommand.
fn pages_into(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(public_command(), dir)
}

fn write_stdout(bytes: &[u8]) -> Result<i32, Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        // A reader that closed early (`| head`) is not the tool's failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Failure::new(FAILURE, format!("standard output: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subcommands a user can type: everything but the hidden internal ones.
    fn visible_subcommands() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect()
    }

    #[test]
    fn completions_name_every_subcommand_in_every_shell() {
        let names = visible_subcommands();
        assert!(names.len() >= 6, "{names:?}");
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut public_command(), "leadership", &mut out);
            let script = String::from_utf8(out).unwrap();
            for name in &names {
                assert!(script.contains(name.as_str()), "{shell}: no {name}");
            }
            assert!(
                !script.contains("__watchdog"),
                "{shell}: the internal watchdog"
            );
            // Options of the subcommands complete too, not only their names (fish writes
            // `-l interval`).
            assert!(
                script.contains("interval")
                    && script.contains("grace")
                    && script.contains("metrics-listen"),
                "{shell}"
            );
        }
    }

    #[test]
    fn the_man_page_names_every_subcommand_and_the_exit_codes() {
        let mut out = Vec::new();
        page(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH leadership"),
            "{page}"
        );
        for name in visible_subcommands() {
            assert!(page.contains(&format!("leadership\\-{name}")), "no {name}");
        }
        assert!(!page.contains("watchdog"));
        assert!(page.contains("Exit codes"));
    }

    #[test]
    fn one_page_per_subcommand_is_written_to_a_directory() {
        let dir = std::env::temp_dir().join(format!("leadership-man-{}", std::process::id()));
        pages_into(&dir).unwrap();
        for name in visible_subcommands() {
            let file = dir.join(format!("leadership-{name}.1"));
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.contains(".TH leadership-"), "{}", file.display());
        }
        assert!(dir.join("leadership.1").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
