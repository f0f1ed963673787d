//! Rows of the store as typed values.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::{column, StoreError};
use crate::names::{BranchName, CommitSha, EnvName, PrNumber, RepoName};
use crate::runtime::PublishedPort;

/// Where an env is on its way to running (or to being gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Fetching,
    Building,
    Starting,
    Ready,
    /// Was Ready, but a service keeps restarting (its restart policy at work). Not in
    /// progress: the reconciler keeps checking on resync and goes back to Ready once no
    /// service is restarting any more.
    Degraded,
    /// Stopped for being idle (or asked to sleep): containers stopped, network and volumes
    /// kept. Waking starts the same containers at the same commit, back to Ready.
    Sleeping,
    Failed,
    Deleting,
    Deleted,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::Pending,
        Phase::Fetching,
        Phase::Building,
        Phase::Starting,
        Phase::Ready,
        Phase::Degraded,
        Phase::Sleeping,
        Phase::Failed,
        Phase::Deleting,
        Phase::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Fetching => "Fetching",
            Phase::Building => "Building",
            Phase::Starting => "Starting",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Sleeping => "Sleeping",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
            Phase::Deleted => "Deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Work is under way: a crash here means the reconciler must pick it up again.
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            Phase::Pending | Phase::Fetching | Phase::Building | Phase::Starting | Phase::Deleting
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Deleted,
}

/// One service as last seen by the reconciler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// Direct URLs of the published ports (host and host port), one per port: what raw
    /// TCP clients use, and the fallback when there is no front door.
    #[serde(default)]
    pub urls: Vec<String>,
    /// The service's URL through the front door (`<env>.<domain>` for the main service,
    /// `<service>--<env>.<domain>` for others): set when there is a front door and the
    /// service publishes a TCP port; kept while the env sleeps, since a request wakes it.
    #[serde(default)]
    pub front_door_url: Option<String>,
    /// The container's address on its env network while it runs: where the front door
    /// connects (the published host port goes through Docker's port proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    /// The service `<env>.<domain>` reaches through the front door (compose
    /// `x-slipway.main`, else `web`, else the first with a published port).
    #[serde(default)]
    pub main: bool,
    /// Set for a shared service: not the env's own container but its repo's shared env's,
    /// reached on the env's network under the service's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedFrom>,
}

/// Where a shared service an env reaches runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFrom {
    /// The repo's shared env (`<repo>-shared`).
    pub env: EnvName,
    /// The container the env's network was given: a newer one (the shared env redeployed)
    /// has to be attached again.
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvRecord {
    pub name: EnvName,
    pub repo: RepoName,
    pub branch: BranchName,
    pub requested_by: String,
    pub desired: Desired,
    /// Bumped by every `up`; the reconciler has finished with `observed_generation`.
    pub generation: i64,
    pub observed_generation: i64,
    #[serde(with = "humantime_secs")]
    pub ttl: Duration,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub commit: Option<CommitSha>,
    pub phase: Phase,
    pub reason: Option<String>,
    pub services: Vec<ServiceStatus>,
    pub warnings: Vec<String>,
    /// Set for a pull request's env: what to fetch and the commit it must be at.
    #[serde(default)]
    pub pull_request: Option<super::PullRequestSource>,
    /// Set for a submit-queue candidate's env: the commit Slipway built, already in the mirror.
    #[serde(default)]
    pub candidate: Option<CommitSha>,
    /// What keeps (or stops keeping) the env awake and alive.
    #[serde(default)]
    pub idle: IdleState,
    /// The main service's front-door URL (what to open in a browser), when it has one.
    /// Derived from `services` when the row is read.
    #[serde(default)]
    pub url: Option<String>,
}

impl ServiceStatus {
    /// What people should click for this service: its front-door URL, then the direct URLs
    /// of the ports the front door does not reach (a second TCP port, UDP). Without a
    /// front-door URL, every direct URL.
    pub fn links(&self) -> Vec<String> {
        let Some(front_door) = &self.front_door_url else {
            return self.urls.clone();
        };
        // The front door reaches the first published TCP port (as the proxy routes).
        let routed = self
            .ports
            .iter()
            .position(|p| p.protocol == crate::runtime::Protocol::Tcp);
        std::iter::once(front_door.clone())
            .chain(
                self.urls
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != routed)
                    .map(|(_, url)| url.clone()),
            )
            .collect()
    }
}

/// The main service's front-door URL, if it has one.
fn main_front_door_url(services: &[ServiceStatus]) -> Option<String> {
    services
        .iter()
        .find(|s| s.main)
        .and_then(|s| s.front_door_url.clone())
}

/// An env's idle bookkeeping: the signals of use, what was asked, what was told.
/// Times are unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleState {
    /// Asked to sleep (by a person or for being idle); cleared by a wake or an `up`.
    pub asleep: bool,
    /// Never put to sleep nor deleted for being idle.
    pub pinned: bool,
    /// The newest deploy asked for (a push to the branch or PR, an `up`).
    pub last_deploy_at: Option<i64>,
    /// The last command on any surface that named the env.
    pub last_command_at: Option<i64>,
    /// The last HTTP request through the front door (written at most every
    /// [`super::ACTIVITY_DEBOUNCE`]).
    pub last_request_at: Option<i64>,
    /// When it last went to sleep.
    pub slept_at: Option<i64>,
    /// When people were last told it is about to be deleted, and the deadline they were
    /// told (a newer deadline, after use or `extend`, is told again).
    pub warned_at: Option<i64>,
    pub warned_for: Option<i64>,
    /// When the env's branch was found gone from its repo (a branch env only; `None` while
    /// it exists): the env goes `warn_before` later unless the branch comes back.
    #[serde(default)]
    pub branch_gone_at: Option<i64>,
}

impl IdleState {
    /// The newest sign of use: every signal there is, and the env's creation as the floor.
    pub fn last_used_at(&self, created_at: i64) -> i64 {
        [
            Some(created_at),
            self.last_deploy_at,
            self.last_command_at,
            self.last_request_at,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(created_at)
    }

    /// How long nothing has used the env, as of `now`.
    pub fn idle_for(&self, created_at: i64, now: i64) -> Duration {
        Duration::from_millis((now - self.last_used_at(created_at)).max(0) as u64)
    }
}

impl EnvRecord {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: String| StoreError::Corrupt(format!("{what}: {e}"));
        let text = |name: &str| column::<String>(row, name);
        let desired = match text("desired")?.as_str() {
            "running" => Desired::Running,
            "deleted" => Desired::Deleted,
            other => return Err(corrupt("desired", other.to_string())),
        };
        let phase_text = text("phase")?;
        let services: Vec<ServiceStatus> = serde_json::from_str(&text("services")?)
            .map_err(|e| corrupt("services", e.to_string()))?;
        Ok(Self {
            name: EnvName::parse(&text("name")?).map_err(|e| corrupt("name", e.to_string()))?,
            repo: RepoName::parse(&text("repo")?).map_err(|e| corrupt("repo", e.to_string()))?,
            branch: BranchName::parse(&text("branch")?)
                .map_err(|e| corrupt("branch", e.to_string()))?,
            requested_by: text("requested_by")?,
            desired,
            generation: column(row, "generation")?,
            observed_generation: column(row, "observed_generation")?,
            ttl: Duration::from_millis(column::<i64>(row, "ttl_ms")?.max(0) as u64),
            expires_at: column(row, "expires_at")?,
            created_at: column(row, "created_at")?,
            updated_at: column(row, "updated_at")?,
            commit: column::<Option<String>>(row, "commit_sha")?
                .map(|c| CommitSha::parse(&c))
                .transpose()
                .map_err(|e| corrupt("commit", e.to_string()))?,
            phase: Phase::parse(&phase_text).ok_or_else(|| corrupt("phase", phase_text.clone()))?,
            reason: column(row, "reason")?,
            url: main_front_door_url(&services),
            services,
            warnings: serde_json::from_str(&text("warnings")?)
                .map_err(|e| corrupt("warnings", e.to_string()))?,
            pull_request: pull_request_source(row).map_err(|e| corrupt("pull request", e))?,
            candidate: match column::<Option<String>>(row, "git_ref")? {
                Some(_) => None,
                None => column::<Option<String>>(row, "want_commit")?
                    .map(|c| CommitSha::parse(&c))
                    .transpose()
                    .map_err(|e| corrupt("candidate commit", e.to_string()))?,
            },
            idle: IdleState {
                asleep: column::<i64>(row, "asleep")? != 0,
                pinned: column::<i64>(row, "pinned")? != 0,
                last_deploy_at: column(row, "requested_at")?,
                last_command_at: column(row, "last_command_at")?,
                last_request_at: column(row, "last_request_at")?,
                slept_at: column(row, "slept_at")?,
                warned_at: column(row, "warned_at")?,
                warned_for: column(row, "warned_for")?,
                branch_gone_at: column(row, "branch_gone_at")?,
            },
        })
    }

    /// What people should click, service by service, the main service first: front-door
    /// URLs where there are some, direct host-port URLs for the rest (see
    /// [`ServiceStatus::links`]).
    pub fn urls(&self) -> Vec<(String, String)> {
        let main = self.services.iter().filter(|s| s.main);
        let others = self.services.iter().filter(|s| !s.main);
        main.chain(others)
            .flat_map(|s| s.links().into_iter().map(|u| (s.name.clone(), u)))
            .collect()
    }

    /// The one link for the env as a whole: the main service's front-door URL, else the
    /// first of [`EnvRecord::urls`].
    pub fn main_url(&self) -> Option<String> {
        main_front_door_url(&self.services)
            .or_else(|| self.urls().into_iter().next().map(|(_, url)| url))
    }
}

fn pull_request_source(row: &AnyRow) -> Result<Option<super::PullRequestSource>, String> {
    let git_ref: Option<String> = column(row, "git_ref").map_err(|e| e.to_string())?;
    let number: Option<i64> = column(row, "pr_number").map_err(|e| e.to_string())?;
    let want: Option<String> = column(row, "want_commit").map_err(|e| e.to_string())?;
    match (git_ref, number, want) {
        (Some(git_ref), Some(number), Some(want)) => {
            let head = CommitSha::parse(&want).map_err(|e| e.to_string())?;
            let number = PrNumber::from_i64(number).map_err(|e| e.to_string())?;
            Ok(Some(super::PullRequestSource {
                number,
                git_ref,
                head,
            }))
        }
        _ => Ok(None),
    }
}

/// One entry of an env's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub env: String,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: String,
    pub phase: Option<Phase>,
    pub message: String,
    pub actor: Option<String>,
}

impl Event {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: column(row, "id")?,
            env: column(row, "env")?,
            at: column(row, "at")?,
            kind: column(row, "kind")?,
            phase: column::<Option<String>>(row, "phase")?.and_then(|p| Phase::parse(&p)),
            message: column(row, "message")?,
            actor: column(row, "actor")?,
        })
    }
}

/// Durations in JSON as humantime strings ("8h"), the way people write them in config.
mod humantime_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &humantime::format_duration(Duration::from_secs(value.as_secs())).to_string(),
        )
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}
