//! A refused command line as one line: clap's message, its tip, and the `--help` to read.
//!
//! clap renders a usage error as paragraphs: the message, a tip ("a similar argument exists:
//! '--epochs'"), the usage of the command it was parsing, and "For more information, try
//! '--help'". Every refusal of gpu-train is one line on stderr, so the paragraphs are folded
//! into one: the message, the tips in brackets, and the full `--help` to run, named from the
//! usage line (`gpu-train predict --help` for an error in `predict`).

/// The one line for a clap error: `unexpected argument '--epoch' found (tip: a similar
/// argument exists: '--epochs'); see gpu-train --help` (the caller adds "gpu-train: ").
pub fn one_line(e: &clap::Error) -> String {
    one_line_of(&e.render().to_string())
}

/// [`one_line`] on clap's rendered text (its Display form, without colours).
pub fn one_line_of(text: &str) -> String {
    let paragraphs: Vec<Vec<&str>> = text
        .split("\n\n")
        .map(|p| p.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
        .filter(|p: &Vec<&str>| !p.is_empty())
        .collect();
    let Some((message, rest)) = paragraphs.split_first() else {
        return "the command line was refused; see gpu-train --help".to_string();
    };
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message).to_string();
    let tips: Vec<&str> = rest
        .iter()
        .flatten()
        .copied()
        .filter(|l| l.starts_with("tip:"))
        .collect();
    let command = rest
        .iter()
        .flatten()
        .find_map(|l| l.strip_prefix("Usage:"))
        .map(command_path)
        .unwrap_or_else(|| "gpu-train".to_string());
    // A negative count reaches clap as "invalid digit found in string" for '--epochs <EPOCHS>'.
    let hint = if message.contains("invalid digit") && message.contains("'-") {
        " (a count: a whole number, not negative)"
    } else {
        ""
    };
    let tips = if tips.is_empty() {
        String::new()
    } else {
        format!(" ({})", tips.join("; "))
    };
    format!("{message}{hint}{tips}; see {command} --help")
}

/// The command a usage line belongs to: its words up to the first placeholder or flag
/// (`gpu-train predict [OPTIONS] <SNAPSHOT>` → `gpu-train predict`).
fn command_path(usage: &str) -> String {
    let words: Vec<&str> = usage
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect();
    if words.is_empty() {
        "gpu-train".to_string()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tip_and_the_subcommand_stay_in_the_line() {
        let text = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, use '-- --bogus'\n\nUsage: gpu-train predict [OPTIONS] <SNAPSHOT>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_of(text),
            "unexpected argument '--bogus' found (tip: to pass '--bogus' as a value, use '-- --bogus'); see gpu-train predict --help"
        );
    }

    #[test]
    fn a_message_over_two_lines_is_joined() {
        let text = "error: the following required arguments were not provided:\n  <SNAPSHOT>\n\nUsage: gpu-train predict <SNAPSHOT>\n";
        assert_eq!(
            one_line_of(text),
            "the following required arguments were not provided: <SNAPSHOT>; see gpu-train predict --help"
        );
    }
}
