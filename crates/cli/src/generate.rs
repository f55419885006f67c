//! `shoal completion` and `shoal man`: shell completion scripts (clap_complete) and man pages
//! (clap_mangen) generated from the clap definition, so that they list exactly the commands and
//! flags this binary accepts.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::args::{Cli, CompletionShell};
use crate::error::CliError;

/// The completion script for `shell`.
pub fn completion(shell: CompletionShell) -> String {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

/// The man pages `man_pages` writes: `shoal.1`, then one per command (`shoal-service-create.1`),
/// as clap_mangen names them.
pub fn man_page_names() -> Vec<String> {
    fn walk(cmd: &clap::Command, prefix: &str, names: &mut Vec<String>) {
        let name = if prefix.is_empty() { cmd.get_name().to_string() } else { format!("{prefix}-{}", cmd.get_name()) };
        names.push(format!("{name}.1"));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            walk(sub, &name, names);
        }
    }
    let mut names = Vec::new();
    walk(&Cli::command(), "", &mut names);
    names
}

/// Writes a man page for `shoal` and for each of its commands into `dir` (created if missing);
/// returns the files written.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let failed = |e: std::io::Error| CliError::Message(format!("cannot write man pages to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(failed)?;
    Ok(man_page_names().into_iter().map(|name| dir.join(name)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_scripts_know_the_commands_and_flags() {
        for (shell, marker) in [
            (CompletionShell::Bash, "complete -F"),
            (CompletionShell::Zsh, "#compdef shoal"),
            (CompletionShell::Fish, "complete -c shoal"),
        ] {
            let script = completion(shell);
            assert!(script.contains(marker), "{shell:?}: no {marker:?}");
            for word in ["service", "stack", "update-parallelism", "network-add"] {
                assert!(script.contains(word), "{shell:?} script lacks {word}");
            }
        }
    }

    #[test]
    fn man_pages_are_written_for_every_command() {
        let names = man_page_names();
        for name in ["shoal.1", "shoal-service.1", "shoal-service-create.1", "shoal-stack-deploy.1", "shoal-man.1"] {
            assert!(names.contains(&name.to_string()), "{name} in {names:?}");
        }
        let dir = std::env::temp_dir().join(format!("shoal-man-{}-{}", std::process::id(), crate::names::generate()));
        let written = man_pages(&dir.join("man1")).unwrap();
        assert_eq!(written.len(), names.len());
        for path in &written {
            let page = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(page.starts_with(".ie") || page.contains(".TH"), "{}: not a man page", path.display());
        }
        let create = std::fs::read_to_string(dir.join("man1/shoal-service-create.1")).unwrap();
        assert!(create.contains("replicas"), "{create}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
