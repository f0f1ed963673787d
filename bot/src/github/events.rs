//! GitHub webhook payloads as typed events: only the fields Slipway reads, so any payload
//! GitHub sends for a handled event parses, and every other event is `Ignored` cleanly.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    Ping,
    PullRequest(PullRequestEvent),
    IssueComment(IssueCommentEvent),
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
            WebhookEvent::PullRequest(_) | WebhookEvent::IssueComment(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub number: u64,
    pub pull_request: PullRequest,
    pub repository: Repository,
    pub sender: User,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub state: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub labels: Vec<Label>,
    pub head: Head,
    pub base: Base,
    pub user: User,
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
    pub number: u64,
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
                    (_, WebhookEvent::Ignored { event: e }) if e == &event => {}
                    other => panic!("{}: unexpected {other:?}", file.path().display()),
                }
                seen += 1;
            }
        }
        assert!(seen > 50, "only {seen} fixtures found");
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
