//! Did-you-mean: the closest command name or argument key to what was typed.
//!
//! A candidate is suggested when it is within two edits (insertions, deletions,
//! substitutions or swaps of adjacent characters) and fewer edits than the typed word is
//! long, or when the typed word is a prefix of it. A few common synonyms (`env create`,
//! `up`, `--lines`) are suggested too, though never accepted.

use super::{CommandKind, ENV_GROUP, GROUPS};

const MAX_DISTANCE: usize = 2;
/// Longer input is not compared at all (it is not a typo of a short name).
const MAX_INPUT_CHARS: usize = 64;

/// Top-level words that are not commands but clearly mean one.
const COMMAND_ALIASES: &[(&str, &str)] = &[
    ("up", "env up"),
    ("deploy", "env up"),
    ("create", "env up"),
    ("down", "env down"),
    ("delete", "env down"),
    ("destroy", "env down"),
    ("list", "env list"),
    ("ls", "env list"),
    ("status", "env status"),
    ("logs", "env logs"),
    ("extend", "env extend"),
    ("tests", "test"),
    ("retest", "test"),
    ("rerun", "test"),
    ("who", "whoami"),
    ("commands", "help"),
    ("usage", "help"),
    ("?", "help"),
];

/// `env <word>` synonyms.
/// Words people use for the queue's subcommands.
const QUEUE_ALIASES: &[(&str, &str)] = &[
    ("enqueue", "queue add"),
    ("push", "queue add"),
    ("rm", "queue remove"),
    ("delete", "queue remove"),
    ("dequeue", "queue remove"),
    ("ls", "queue list"),
    ("show", "queue status"),
    ("hold", "queue pause"),
    ("freeze", "queue pause"),
    ("unpause", "queue resume"),
    ("unfreeze", "queue resume"),
    ("requeue", "queue retry"),
];

const ENV_ALIASES: &[(&str, &str)] = &[
    ("create", "env up"),
    ("start", "env up"),
    ("new", "env up"),
    ("deploy", "env up"),
    ("delete", "env down"),
    ("destroy", "env down"),
    ("remove", "env down"),
    ("rm", "env down"),
    ("stop", "env down"),
    ("teardown", "env down"),
    ("ls", "env list"),
    ("show", "env status"),
    ("info", "env status"),
    ("log", "env logs"),
    ("renew", "env extend"),
    ("prolong", "env extend"),
    ("keep", "env extend"),
];

/// Argument key synonyms; only suggested for commands that have the target.
const ARGUMENT_ALIASES: &[(&str, &str)] = &[
    ("lines", "tail"),
    ("n", "tail"),
    ("svc", "service"),
    ("for", "by"),
    ("expire", "ttl"),
    ("expires", "ttl"),
    ("lifetime", "ttl"),
    ("failed-only", "failed"),
    ("failed_only", "failed"),
    ("only-failed", "failed"),
    ("environment", "env"),
    ("ref", "branch"),
    ("head", "branch"),
    ("repository", "repo"),
    ("command", "topic"),
];

/// Edit distance counting insertions, deletions, substitutions and swaps of adjacent
/// characters as one edit each (Levenshtein plus transpositions, "optimal string
/// alignment"). Compares `char`s, not bytes.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-2, i-1 and i of the usual dynamic-programming table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The best candidate `(text, suggestion)` for `given`, with its score (lower is better;
/// ties go to the earlier candidate).
fn closest<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = (&'a str, &'static str)>,
) -> Option<(&'static str, usize)> {
    let given_chars = given.chars().count();
    if given_chars == 0 || given_chars > MAX_INPUT_CHARS {
        return None;
    }
    let mut best: Option<(&'static str, usize)> = None;
    for (text, suggestion) in candidates {
        let edits = distance(given, text);
        let prefix = given_chars >= 2 && text.starts_with(given);
        let score = if prefix { edits.min(1) } else { edits };
        let close = edits == 0 || prefix || (edits <= MAX_DISTANCE && edits < given_chars);
        if close && best.is_none_or(|(_, best_score)| score < best_score) {
            best = Some((suggestion, score));
        }
    }
    best
}

/// For an unknown command given as `words`: the words it is reported as (one or two of
/// them) and the suggestion, if any.
pub fn command(words: &[&str]) -> (String, Option<&'static str>) {
    let Some(first_word) = words.first() else {
        return (String::new(), None);
    };
    let first = first_word.to_lowercase();
    let second = words.get(1).map(|word| word.to_lowercase());
    let both = || words[..2].join(" ");

    if let Some(group) = GROUPS.into_iter().find(|g| *g == first) {
        let Some(second) = second else {
            return (first_word.to_string(), None);
        };
        let subcommands = CommandKind::ALL
            .into_iter()
            .filter_map(|kind| Some((kind.subcommand_of(group)?, kind.name())));
        let aliases = if group == ENV_GROUP {
            ENV_ALIASES
        } else {
            QUEUE_ALIASES
        };
        let suggestion = closest(&second, subcommands.chain(aliases.iter().copied()));
        return (both(), suggestion.map(|(name, _)| name));
    }

    let single = CommandKind::ALL
        .into_iter()
        .filter(|kind| kind.group().is_none())
        .map(|kind| (kind.name(), kind.name()))
        .chain(GROUPS.map(|g| (g, g)))
        .chain(COMMAND_ALIASES.iter().copied());
    let one = closest(&first, single);
    let two = second.and_then(|second| {
        let pairs = CommandKind::ALL
            .into_iter()
            .filter(|kind| kind.group().is_some())
            .map(|kind| (kind.name(), kind.name()));
        closest(&format!("{first} {second}"), pairs)
    });
    match (one, two) {
        (None, Some((name, _))) => (both(), Some(name)),
        (Some((_, one_score)), Some((name, two_score))) if two_score <= one_score => {
            (both(), Some(name))
        }
        (Some((name, _)), _) => (first_word.to_string(), Some(name)),
        (None, None) => (first_word.to_string(), None),
    }
}

/// The argument of `kind` closest to the unknown `key`.
pub fn argument(kind: CommandKind, key: &str) -> Option<&'static str> {
    let key = key.to_lowercase();
    let names = kind.args().iter().map(|arg| (arg.name, arg.name));
    let aliases = ARGUMENT_ALIASES
        .iter()
        .copied()
        .filter_map(|(alias, target)| Some((alias, kind.arg(target)?.name)));
    closest(&key, names.chain(aliases)).map(|(name, _)| name)
}
