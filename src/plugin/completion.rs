//! Shell completion. `kubectl atk completion SHELL` prints a script (clap_complete) for the
//! `kubectl-atk` command; for `kubectl atk <TAB>`, kubectl (1.26 and later) runs an executable
//! `kubectl_complete-atk` from PATH with the words typed so far and reads cobra's completion
//! protocol back: one candidate per line (`value<TAB>description`), then `:<directive>`.
//! `kubectl atk __complete WORDS...` answers in that protocol; the shim is one line,
//! `exec kubectl atk __complete -- "$@"`.

use clap::{Arg, Command, CommandFactory as _};
use clap_complete::Shell;

use super::{Cli, exit::Exit};

/// cobra's directive: do not fall back to file names.
const NO_FILE_COMPLETION: u8 = 4;
/// cobra's directive: the shell's default (file names).
const DEFAULT_COMPLETION: u8 = 0;

/// `completion SHELL`: the script on stdout.
pub fn script(shell: Shell) -> Exit {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "kubectl-atk", &mut std::io::stdout());
    Exit::Ok
}

/// `__complete WORDS...`: the candidates for the last word, in cobra's protocol.
pub fn answer(words: &[String]) -> Exit {
    print!("{}", candidates(words));
    Exit::Ok
}

/// The protocol text for `words`, the last one being the word under the cursor ("" if none).
pub fn candidates(words: &[String]) -> String {
    let mut command = Cli::command();
    command.build();
    let (typed, partial) = match words.split_last() {
        Some((partial, typed)) => (typed, partial.as_str()),
        None => (&[][..], ""),
    };
    let (current, pending) = walk(&command, typed);
    let mut lines = Vec::new();
    let directive = if let Some(arg) = pending {
        values(arg, partial, &mut lines)
    } else if partial.starts_with('-') {
        flags(current, partial, &mut lines);
        NO_FILE_COMPLETION
    } else {
        for sub in current.get_subcommands().filter(|s| !s.is_hide_set()) {
            push(&mut lines, sub.get_name(), sub.get_about(), partial);
        }
        for positional in current.get_positionals() {
            values(positional, partial, &mut lines);
        }
        NO_FILE_COMPLETION
    };
    lines.push(format!(":{directive}"));
    lines.join("\n") + "\n"
}

/// The subcommand the typed words reach, and the option still waiting for its value.
fn walk<'a>(root: &'a Command, typed: &[String]) -> (&'a Command, Option<&'a Arg>) {
    let mut current = root;
    let mut pending = None;
    for word in typed {
        if pending.take().is_some() {
            continue;
        }
        if let Some(arg) = option_named(current, word).filter(|a| takes_value(a)) {
            // `--flag=value` carries its value; `--flag value` waits for the next word.
            pending = (!word.contains('=')).then_some(arg);
        } else if let Some(sub) = current.find_subcommand(word) {
            current = sub;
        }
    }
    (current, pending)
}

fn option_named<'a>(command: &'a Command, word: &str) -> Option<&'a Arg> {
    let name = word.split('=').next().unwrap_or(word);
    command.get_arguments().find(|arg| {
        name.strip_prefix("--")
            .is_some_and(|long| arg.get_long() == Some(long))
            || name
                .strip_prefix('-')
                .and_then(|s| s.chars().next())
                .is_some_and(|c| name.len() == 2 && arg.get_short() == Some(c))
    })
}

fn takes_value(arg: &Arg) -> bool {
    // An optional value (`--wait[=BOOL]`) must be attached with `=`: the next word is not it.
    arg.get_num_args().is_some_and(|n| n.min_values() > 0)
}

fn values(arg: &Arg, partial: &str, lines: &mut Vec<String>) -> u8 {
    let possible = arg.get_possible_values();
    if possible.is_empty() {
        // A path (kubeconfig, CA, file) completes as file names; other values as nothing.
        let hint = arg.get_value_hint();
        return if matches!(hint, clap::ValueHint::FilePath | clap::ValueHint::AnyPath) {
            DEFAULT_COMPLETION
        } else {
            NO_FILE_COMPLETION
        };
    }
    for value in possible.iter().filter(|v| !v.is_hide_set()) {
        push(lines, value.get_name(), value.get_help(), partial);
    }
    NO_FILE_COMPLETION
}

fn flags(command: &Command, partial: &str, lines: &mut Vec<String>) {
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            push(lines, &format!("--{long}"), arg.get_help(), partial);
        }
        if let Some(short) = arg.get_short() {
            push(lines, &format!("-{short}"), arg.get_help(), partial);
        }
    }
}

fn push(
    lines: &mut Vec<String>,
    value: &str,
    help: Option<&clap::builder::StyledStr>,
    partial: &str,
) {
    if !value.starts_with(partial) {
        return;
    }
    let help = help
        .map(|h| h.to_string())
        .and_then(|h| h.lines().next().map(str::to_string))
        .unwrap_or_default();
    lines.push(if help.is_empty() {
        value.to_string()
    } else {
        format!("{value}\t{help}")
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(words: &[&str]) -> Vec<String> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        candidates(&words).lines().map(str::to_string).collect()
    }

    fn values_of(lines: &[String]) -> Vec<&str> {
        lines
            .iter()
            .map(|l| l.split('\t').next().unwrap_or_default())
            .collect()
    }

    #[test]
    fn subcommands_flags_and_values_complete() {
        let top = complete(&[""]);
        let names = values_of(&top);
        for sub in ["create", "status", "revoke", "whoami", "completion"] {
            assert!(names.contains(&sub), "{sub} missing: {top:?}");
        }
        assert!(!names.contains(&"__complete"), "hidden command offered");
        assert_eq!(top.last().map(String::as_str), Some(":4"));

        assert_eq!(
            values_of(&complete(&["re"])),
            ["reveal", "revoke", ":4"],
            "prefix"
        );
        // Flags of the subcommand, kubectl's global ones included.
        let flags = complete(&["create", "--"]);
        for flag in [
            "--organization",
            "--lifetime",
            "--wait",
            "--kubeconfig",
            "--as",
        ] {
            assert!(
                values_of(&flags).contains(&flag),
                "{flag} missing: {flags:?}"
            );
        }
        // Values of an option, also after global flags and a namespace.
        assert_eq!(
            values_of(&complete(&["-n", "acme", "status", "-o", ""])),
            ["json", "yaml", ":4"]
        );
        assert_eq!(values_of(&complete(&["completion", "f"])), ["fish", ":4"]);
        // A path option falls back to file names.
        assert_eq!(complete(&["--kubeconfig", ""]), [":0"]);
    }
}
