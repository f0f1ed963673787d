//! GitHub webhook payloads as typed events: only the fields Slipway reads, so any payload
//! GitHub sends for a handled event parses, and every other event is `Ignored` cleanly.

use envmgr::names::PrNumber;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    Ping,
    PullRequest(PullRequestEvent),
    IssueComment(IssueCommentEvent),
    /// A branch was deleted (a `delete` event of a branch, or a `push` with `deleted`):
    /// envs of that branch are deleted after a warning.
    BranchDeleted(BranchDeleted),
    /// An event Slipway does not act on; acknowledged and dropped.
    Ignored {
        event: String,
    },
}

impl WebhookEvent {
    /// Parses the body of a delivery of `event` (the `X-GitHub-Event` header). Malformed
    /// JSON, or a handled event missing a field Slipway needs, is an error.
    pub fn parse(event: &str, body: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match event {
            "ping" => {
                serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
                WebhookEvent::Ping
            }
            "pull_request" => WebhookEvent::PullRequest(serde_json::from_slice(body)?),
            "issue_comment" => WebhookEvent::IssueComment(serde_json::from_slice(body)?),
            "delete" => {
                let event: DeleteEvent = serde_json::from_slice(body)?;
                match (event.ref_type.as_str(), event.repository) {
                    ("branch", Some(repository)) if !event.git_ref.is_empty() => {
                        WebhookEvent::BranchDeleted(BranchDeleted {
                            repository,
                            branch: event.git_ref,
                        })
                    }
                    _ => WebhookEvent::Ignored {
                        event: "delete".into(),
                    },
                }
            }
            "push" => {
                let event: PushEvent = serde_json::from_slice(body)?;
                match (event.git_ref.strip_prefix("refs/heads/"), event.repository) {
                    (Some(branch), Some(repository)) if event.deleted && !branch.is_empty() => {
                        WebhookEvent::BranchDeleted(BranchDeleted {
                            repository,
                            branch: branch.to_string(),
                        })
                    }
                    _ => WebhookEvent::Ignored {
                        event: "push".into(),
                    },
                }
            }
            other => {
                // Still must be JSON: a truncated body is refused whatever the event.
                serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
                WebhookEvent::Ignored {
                    event: other.to_string(),
                }
            }
        })
    }

    /// Whether processing this event can change anything (so it is stored and queued).
    pub fn is_handled(&self) -> bool {
        matches!(
            self,
            WebhookEvent::PullRequest(_)
                | WebhookEvent::IssueComment(_)
                | WebhookEvent::BranchDeleted(_)
        )
    }
}

/// The branch a `delete` or `push` event says is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchDeleted {
    pub repository: Repository,
    /// The branch's name, without `refs/heads/`.
    pub branch: String,
}

/// A `delete` event: a branch or tag was deleted (`ref` is its short name). Only what a
/// branch deletion needs; a body without it is an event Slipway does not act on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct DeleteEvent {
    #[serde(rename = "ref", default)]
    git_ref: String,
    #[serde(default)]
    ref_type: String,
    repository: Option<Repository>,
}

/// A `push` event, as far as a deleted branch is concerned (`ref` is the full ref name).
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct PushEvent {
    #[serde(rename = "ref", default)]
    git_ref: String,
    #[serde(default)]
    deleted: bool,
    repository: Option<Repository>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub number: PrNumber,
    pub pull_request: PullRequest,
    pub repository: Repository,
    pub sender: User,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PullRequest {
    pub number: PrNumber,
    pub state: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub labels: Vec<Label>,
    pub head: Head,
    pub base: Base,
    pub user: User,
    #[serde(default)]
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Head {
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `null` when the fork was deleted.
    pub repo: Option<Repository>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Base {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub repo: Repository,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Repository {
    pub full_name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub login: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Label {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IssueCommentEvent {
    pub action: String,
    pub issue: Issue,
    pub comment: Comment,
    pub repository: Repository,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Issue {
    pub number: PrNumber,
    /// Present when the issue is a pull request.
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Comment {
    pub id: u64,
    /// `null` for an empty comment.
    pub body: Option<String>,
    pub user: User,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every payload GitHub sends that we have an example of parses into a typed event or is
    /// ignored: none is refused as malformed.
    #[test]
    fn every_fixture_parses_or_is_ignored() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/github-webhooks");
        let mut seen = 0;
        for dir in std::fs::read_dir(&root).expect("fixtures folder").flatten() {
            if !dir.path().is_dir() {
                continue;
            }
            let event = dir.file_name().to_string_lossy().into_owned();
            for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
                let body = std::fs::read(file.path()).unwrap();
                let parsed = WebhookEvent::parse(&event, &body)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.path().display()));
                match (&*event, &parsed) {
                    ("pull_request", WebhookEvent::PullRequest(_))
                    | ("issue_comment", WebhookEvent::IssueComment(_))
                    | ("ping", WebhookEvent::Ping) => {}
                    ("delete" | "push", WebhookEvent::BranchDeleted(_)) => {}
                    (_, WebhookEvent::Ignored { event: e }) if e == &event => {}
                    other => panic!("{}: unexpected {other:?}", file.path().display()),
                }
                seen += 1;
            }
        }
        assert!(seen > 50, "only {seen} fixtures found");
    }

    /// A deleted branch comes as a `delete` of ref type `branch` or a `push` with
    /// `deleted`; a deleted tag and an ordinary push are ignored.
    #[test]
    fn deleted_branches_are_recognised_from_delete_and_push_events() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/github-webhooks");
        let fixture = |path: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(root.join(path)).unwrap()).unwrap()
        };
        let parse = |event: &str, body: &serde_json::Value| {
            WebhookEvent::parse(event, body.to_string().as_bytes()).unwrap()
        };
        let deleted = |branch: &str| {
            WebhookEvent::BranchDeleted(BranchDeleted {
                repository: Repository {
                    full_name: "Codertocat/Hello-World".into(),
                },
                branch: branch.into(),
            })
        };
        let mut delete = fixture("delete/payload.json");
        assert!(matches!(
            parse("delete", &delete),
            WebhookEvent::Ignored { .. }
        ));
        delete["ref"] = "feature-x".into();
        delete["ref_type"] = "branch".into();
        assert_eq!(parse("delete", &delete), deleted("feature-x"));

        let mut push = fixture("push/payload.json");
        assert!(matches!(parse("push", &push), WebhookEvent::Ignored { .. }));
        push["ref"] = "refs/heads/feat/a".into();
        assert_eq!(parse("push", &push), deleted("feat/a"));
        let created = fixture("push/with-new-branch.payload.json");
        assert!(matches!(
            parse("push", &created),
            WebhookEvent::Ignored { .. }
        ));
        assert!(deleted("x").is_handled());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(
            WebhookEvent::parse("pull_request", b"{\"action\": \"opened\", \"number\"").is_err()
        );
        assert!(WebhookEvent::parse("pull_request", b"{\"action\": \"opened\"}").is_err());
        assert!(WebhookEvent::parse("push", b"{not json").is_err());
        assert!(WebhookEvent::parse("push", b"{}").is_ok());
    }
}

/// Property ("fuzz") tests of the webhook parser, run with many cases in CI: arbitrary bytes
/// and mutated real payloads (the fixtures GitHub sent) always give a typed event or a typed
/// error, never a panic, and no accepted event carries a PR number outside 1..=2^31-1.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    const EVENTS: [&str; 5] = ["pull_request", "issue_comment", "ping", "push", ""];

    /// (event, body) of every fixture, read once.
    fn fixtures() -> &'static [(String, Vec<u8>)] {
        static FIXTURES: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
        FIXTURES.get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/fixtures/github-webhooks");
            let mut all = Vec::new();
            for dir in std::fs::read_dir(&root).expect("fixtures folder").flatten() {
                if !dir.path().is_dir() {
                    continue;
                }
                let event = dir.file_name().to_string_lossy().into_owned();
                for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
                    all.push((event.clone(), std::fs::read(file.path()).unwrap()));
                }
            }
            assert!(!all.is_empty(), "no fixtures under {}", root.display());
            all
        })
    }

    /// Whatever parsed, its numbers are in range.
    fn check(event: &str, body: &[u8]) {
        let in_range = |n: PrNumber| (1..=PrNumber::MAX).contains(&n.get());
        match WebhookEvent::parse(event, body) {
            Ok(WebhookEvent::PullRequest(e)) => {
                assert!(
                    in_range(e.number) && in_range(e.pull_request.number),
                    "{e:?}"
                );
            }
            Ok(WebhookEvent::IssueComment(e)) => assert!(in_range(e.issue.number), "{e:?}"),
            Ok(WebhookEvent::BranchDeleted(e)) => {
                assert!(!e.branch.is_empty() || event == "delete", "{e:?}")
            }
            Ok(WebhookEvent::Ping | WebhookEvent::Ignored { .. }) => {}
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }

    /// Replaces the value at a pseudo-random path of `value` (chosen by `seed`) with `with`.
    fn replace_somewhere(node: &mut Value, seed: u64, with: Value) {
        let next_seed = seed.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
        match node {
            Value::Object(map) if !map.is_empty() && !seed.is_multiple_of(4) => {
                let i = (seed as usize / 4) % map.len();
                let child = map.values_mut().nth(i).expect("in range");
                replace_somewhere(child, next_seed, with);
            }
            Value::Array(items) if !items.is_empty() && !seed.is_multiple_of(4) => {
                let i = (seed as usize / 4) % items.len();
                replace_somewhere(&mut items[i], next_seed, with);
            }
            _ => *node = with,
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            prop::sample::select(vec![
                0i64,
                -1,
                1,
                2_147_483_647,
                2_147_483_648,
                4_294_967_297
            ])
            .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            Just(Value::Array(vec![])),
            Just(Value::Object(Default::default())),
        ]
    }

    /// Deep nesting and large bodies are refused or parsed without exhausting the stack.
    #[test]
    fn deep_and_large_bodies_are_bounded() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_object = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        for event in EVENTS {
            // Valid JSON, so an ignored event may accept it (serde_json skips it without
            // recursing); a handled one is refused. Either way, no stack overflow.
            check(event, deep.as_bytes());
            check(event, deep_object.as_bytes());
        }
        for event in ["pull_request", "issue_comment"] {
            assert!(WebhookEvent::parse(event, deep_object.as_bytes()).is_err());
        }
        // A real payload with a 5 MB comment still parses.
        let (_, body) = fixtures()
            .iter()
            .find(|(event, _)| event == "issue_comment")
            .expect("an issue_comment fixture");
        let mut value: Value = serde_json::from_slice(body).unwrap();
        value["comment"]["body"] = Value::from("x".repeat(5 * 1024 * 1024));
        check("issue_comment", &serde_json::to_vec(&value).unwrap());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(
            event in prop::sample::select(EVENTS.to_vec()),
            body in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            check(event, &body);
        }

        #[test]
        fn mutated_fixture_bytes_never_panic(
            index in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let (event, body) = index.get(fixtures());
            let mut body = body.clone();
            for (at, byte) in flips {
                let i = at.index(body.len());
                body[i] = byte;
            }
            if truncate {
                body.truncate(cut.index(body.len() + 1));
            }
            check(event, &body);
        }

        #[test]
        fn mutated_fixture_values_never_panic(
            index in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<u64>(), json_value()), 1..4),
            number in json_value(),
        ) {
            let (event, body) = index.get(fixtures());
            let mut value: Value = serde_json::from_slice(body).unwrap();
            for (seed, with) in edits {
                replace_somewhere(&mut value, seed, with);
            }
            check(event, &serde_json::to_vec(&value).unwrap());
            // The numbers Slipway keys on, set to anything.
            let mut value: Value = serde_json::from_slice(body).unwrap();
            for pointer in ["/number", "/pull_request/number", "/issue/number"] {
                if let Some(slot) = value.pointer_mut(pointer) {
                    *slot = number.clone();
                }
            }
            check(event, &serde_json::to_vec(&value).unwrap());
        }
    }
}
