//! The submit queue's front desk: what `queue add|remove|list|status|pause|resume|retry`
//! (and `/slipway merge`) do on every surface. Each records intent in the store and nudges
//! the queue's key; the queue reconciler ([`reconciler`]) does the work on whichever replica
//! holds that key.

pub mod reconciler;
pub mod render;

use std::time::Duration;

use envmgr::names::{BranchName, CommitSha, PrNumber, RepoName};
use envmgr::store::{now_ms, queue_key, Change, NewQueueEntry, QueueEntry, QueueRow};
use envmgr::RepoSettings;
use serde::{Deserialize, Serialize};

use crate::access::{Refusal, Role};
use crate::app::App;
use crate::commands::{CommandKind, QueueRef};
use crate::executor::{CommandError, Invocation};

/// Finished entries `queue list` still shows.
const RECENT_MS: i64 = 24 * 3600 * 1000;

/// One entry as every surface shows it (and `--json` prints it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryView {
    pub id: i64,
    pub repo: String,
    pub target: String,
    /// `#42` for a pull request, the branch name otherwise.
    pub change: String,
    pub pr: Option<u64>,
    pub branch: Option<String>,
    pub title: String,
    pub head: String,
    pub priority: i64,
    /// queued, testing, passed, merged, failed or removed.
    pub state: String,
    /// 1 for the next to land; none once it left the line.
    pub position: Option<usize>,
    /// How long until it lands, from the repo's recent candidate times.
    pub eta: Option<String>,
    pub eta_seconds: Option<u64>,
    /// Unix milliseconds of its last change of state.
    pub since: i64,
    pub enqueued_at: i64,
    pub attempts: i64,
    /// Why it failed or left.
    pub reason: Option<String>,
    pub merged_commit: Option<String>,
    pub requested_by: String,
}

/// One queue's own state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueView {
    pub repo: String,
    pub target: String,
    pub paused: bool,
    pub pause_reason: Option<String>,
    pub paused_by: Option<String>,
    /// Changes in line.
    pub length: usize,
}

/// The queue's entries as people see them: live ones in landing order with positions and
/// ETAs, then the recently finished ones, newest last.
pub async fn views(
    app: &App,
    repo: &RepoSettings,
    entries: Vec<QueueEntry>,
) -> Result<Vec<EntryView>, CommandError> {
    let typical = typical_test_time(app, &repo.name).await?;
    let parallel = repo.queue.parallel.max(1);
    let (mut live, mut done): (Vec<QueueEntry>, Vec<QueueEntry>) =
        entries.into_iter().partition(QueueEntry::is_live);
    live.sort_by_key(|e| (-e.priority, e.id));
    done.sort_by_key(|e| (e.updated_at, e.id));
    let now = now_ms();
    let mut views = Vec::new();
    for (i, entry) in live.into_iter().enumerate() {
        let position = i + 1;
        let eta = typical.map(|t| {
            let t = t.as_millis() as i64;
            let ms = match entry.state {
                envmgr::queue::machine::EntryState::Testing => {
                    (t - (now - entry.updated_at)).max(0)
                }
                envmgr::queue::machine::EntryState::Passed => 0,
                _ => t * position.div_ceil(parallel) as i64,
            };
            Duration::from_secs((ms / 1000).max(0) as u64)
        });
        views.push(view(entry, Some(position), eta));
    }
    views.extend(done.into_iter().map(|e| view(e, None, None)));
    Ok(views)
}

fn view(entry: QueueEntry, position: Option<usize>, eta: Option<Duration>) -> EntryView {
    let (pr, branch) = match &entry.change {
        Change::Pull(n) => (Some(n.get()), None),
        Change::Branch(b) => (None, Some(b.to_string())),
    };
    let state = if !entry.wanted && entry.state.is_live() {
        "removed".to_string()
    } else {
        entry.state.as_str().to_string()
    };
    EntryView {
        id: entry.id,
        repo: entry.repo.to_string(),
        target: entry.target.to_string(),
        change: entry.change.to_string(),
        pr,
        branch,
        title: entry.title,
        head: entry.head.to_string(),
        priority: entry.priority,
        state,
        position,
        eta: eta.map(|d| humantime::format_duration(round_minutes(d)).to_string()),
        eta_seconds: eta.map(|d| d.as_secs()),
        since: entry.updated_at,
        enqueued_at: entry.enqueued_at,
        attempts: entry.attempts,
        reason: entry.reason.or(entry.remove_reason),
        merged_commit: entry.merged_commit.map(|c| c.to_string()),
        requested_by: entry.requested_by,
    }
}

/// Whole minutes, at least one: an ETA is an estimate.
fn round_minutes(d: Duration) -> Duration {
    Duration::from_secs((d.as_secs().div_ceil(60)).max(1) * 60)
}

/// The median test time of the repo's recent candidates, else of its recent test runs.
async fn typical_test_time(app: &App, repo: &RepoName) -> Result<Option<Duration>, CommandError> {
    let store = app.store();
    let mut times = store
        .recent_queue_test_times(repo, 20)
        .await
        .map_err(engine_error)?;
    if times.is_empty() {
        times = store
            .recent_run_durations(repo, 20)
            .await
            .map_err(engine_error)?;
    }
    if times.is_empty() {
        return Ok(None);
    }
    times.sort_unstable();
    Ok(Some(Duration::from_millis(
        times[times.len() / 2].max(0) as u64
    )))
}

/// A pull request number as people typed it, checked.
fn pr_number(n: u64) -> Result<PrNumber, CommandError> {
    PrNumber::new(n).map_err(|e| CommandError::Engine(e.into()))
}

fn engine_error(e: envmgr::store::StoreError) -> CommandError {
    CommandError::Engine(e.into())
}

/// The repo a queue command means: named, the pull request's, or the only one.
pub fn repo_for<'a>(
    app: &'a App,
    invocation: &Invocation,
    kind: CommandKind,
    repo: Option<&str>,
) -> Result<&'a RepoSettings, CommandError> {
    let repos = &app.engine.settings().repos;
    let name = repo
        .map(str::to_owned)
        .or(invocation.default_repo.as_ref().map(ToString::to_string));
    match name {
        Some(name) => repos
            .iter()
            .find(|r| r.name.as_str() == name)
            .ok_or_else(|| {
                CommandError::Engine(envmgr::engine::EngineError::UnknownRepo {
                    repo: name,
                    known: repos
                        .iter()
                        .map(|r| r.name.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }),
        None => match repos.as_slice() {
            [only] => Ok(only),
            _ => Err(CommandError::Missing {
                command: kind,
                what: format!(
                    "the repo (configured: {})",
                    repos
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                prefix: invocation.prefix,
            }),
        },
    }
}

/// `queue add`: checks the change may land (a pull request open, approved, its required
/// checks green), then records it at its current head.
pub async fn add(
    app: &App,
    invocation: &Invocation,
    change: Option<QueueRef>,
    repo: Option<String>,
    priority: Option<u64>,
) -> Result<EntryView, CommandError> {
    let repo = repo_for(app, invocation, CommandKind::QueueAdd, repo.as_deref())?;
    let priority = i64::try_from(priority.unwrap_or(0)).unwrap_or(i64::MAX);
    if priority > 0 && invocation.role < Role::Deployer {
        return Err(CommandError::Refused(Refusal {
            command: CommandKind::QueueAdd,
            needed: Role::Deployer,
            have: invocation.role,
        }));
    }
    let change = match change {
        Some(QueueRef::Pull(n) | QueueRef::Number(n)) => Change::Pull(pr_number(n)?),
        Some(QueueRef::Branch(b)) => {
            Change::Branch(BranchName::from_user(&b).map_err(|e| CommandError::Engine(e.into()))?)
        }
        None => match invocation.default_pull {
            Some(n) => Change::Pull(pr_number(n)?),
            None => {
                return Err(CommandError::Missing {
                    command: CommandKind::QueueAdd,
                    what: "the change (a pull request number or a branch)".into(),
                    prefix: invocation.prefix,
                })
            }
        },
    };
    if let Change::Branch(b) = &change {
        if *b == repo.queue.target {
            return Err(CommandError::NotHere(format!(
                "`{b}` is the queue's target branch: queue a branch that should land on it."
            )));
        }
    }
    let (head, title) =
        match &change {
            Change::Pull(n) => pull_ready(app, repo, *n).await?,
            Change::Branch(b) => {
                let head =
                    app.engine.git().fetch_branch(repo, b).await.map_err(|e| {
                        CommandError::NotHere(format!("{e}; push the branch first"))
                    })?;
                (head, b.to_string())
            }
        };
    let entry = app
        .store()
        .enqueue(&NewQueueEntry {
            repo: repo.name.clone(),
            target: repo.queue.target.clone(),
            change,
            head,
            title,
            priority,
            actor: invocation.caller.id.clone(),
        })
        .await
        .map_err(engine_error)?;
    app.engine
        .nudge_queue(&queue_key(&repo.name, &repo.queue.target));
    entry_view(app, repo, entry.id).await
}

/// A pull request's head and title, once it may be queued: open, not a draft, approved as
/// `require_approvals` asks and with every `required_checks` green on its head.
async fn pull_ready(
    app: &App,
    repo: &RepoSettings,
    number: PrNumber,
) -> Result<(CommitSha, String), CommandError> {
    let (forge, github) = forge_for(app, &repo.name)?;
    let info = forge
        .pull_request(github, number)
        .await
        .map_err(|e| CommandError::NotHere(format!("cannot read pull request #{number}: {e}")))?;
    if !info.open {
        return Err(CommandError::NotHere(format!(
            "pull request #{number} is closed: only open pull requests are queued."
        )));
    }
    if info.draft {
        return Err(CommandError::NotHere(format!(
            "pull request #{number} is a draft: mark it ready for review first."
        )));
    }
    let head = CommitSha::parse(&info.head_sha).map_err(|e| CommandError::Engine(e.into()))?;
    let needed = repo.queue.require_approvals as usize;
    if needed > 0 {
        let approvals = forge
            .approvals(github, number)
            .await
            .map_err(|e| CommandError::NotHere(format!("cannot read the reviews: {e}")))?;
        let approvals: Vec<String> = approvals
            .into_iter()
            .filter(|login| !login.eq_ignore_ascii_case(&info.author))
            .collect();
        if approvals.len() < needed {
            return Err(CommandError::NotHere(format!(
                "pull request #{number} needs {needed} approving review{} before it is queued (has {}).",
                if needed == 1 { "" } else { "s" },
                approvals.len()
            )));
        }
    }
    if !repo.queue.required_checks.is_empty() {
        let checks = forge
            .checks(github, head.as_str())
            .await
            .map_err(|e| CommandError::NotHere(format!("cannot read the checks: {e}")))?;
        let missing: Vec<String> = repo
            .queue
            .required_checks
            .iter()
            .filter(|name| {
                !checks.iter().any(|(check, outcome)| {
                    check == *name && matches!(outcome.as_str(), "success" | "neutral" | "skipped")
                })
            })
            .map(|name| {
                let seen = checks
                    .iter()
                    .find(|(check, _)| check == name)
                    .map(|(_, outcome)| outcome.as_str())
                    .unwrap_or("missing");
                format!("`{name}` ({seen})")
            })
            .collect();
        if !missing.is_empty() {
            return Err(CommandError::NotHere(format!(
                "pull request #{number} needs these checks green on {} first: {}.",
                head.short(),
                missing.join(", ")
            )));
        }
    }
    let title = if info.title.trim().is_empty() {
        format!("pull request #{number}")
    } else {
        info.title.trim().to_string()
    };
    Ok((head, title))
}

/// The forge and GitHub repository of a repo whose changes are pull requests.
fn forge_for<'a>(
    app: &'a App,
    repo: &RepoName,
) -> Result<(&'a dyn crate::github::forge::Forge, &'a str), CommandError> {
    let link = app.github_links.iter().find(|l| l.repo == *repo);
    match (&app.forge, link) {
        (Some(forge), Some(link)) => Ok((forge.as_ref(), link.github.as_str())),
        _ => Err(CommandError::NotHere(format!(
            "repo `{repo}` has no GitHub repository configured, so it has no pull requests: \
             queue a branch instead (`queue add <branch> repo:{repo}`)."
        ))),
    }
}

/// The entry a command names: a pull request or branch's newest entry, or an entry number.
pub async fn find_entry<'a>(
    app: &'a App,
    invocation: &Invocation,
    kind: CommandKind,
    entry: Option<QueueRef>,
    repo: Option<String>,
) -> Result<(&'a RepoSettings, QueueEntry), CommandError> {
    let store = app.store();
    let named_repo = repo
        .clone()
        .or(invocation.default_repo.as_ref().map(ToString::to_string));
    let not_found = |what: String| {
        CommandError::NotHere(format!(
            "{what} is not in the submit queue; `queue list` shows what is."
        ))
    };
    let reference = match entry {
        Some(r) => r,
        None => match invocation.default_pull {
            Some(n) => QueueRef::Pull(n),
            None => {
                return Err(CommandError::Missing {
                    command: kind,
                    what: "the entry (a pull request number, a branch or an entry number)".into(),
                    prefix: invocation.prefix,
                })
            }
        },
    };
    // A bare number is a pull request of the repo when it has an entry, else an entry number.
    if let QueueRef::Number(n) = reference {
        let repo_settings = repo_for(app, invocation, kind, named_repo.as_deref()).ok();
        if let Some(repo_settings) = repo_settings {
            if let Some(found) = store
                .latest_entry_of(&repo_settings.name, &Change::Pull(pr_number(n)?))
                .await
                .map_err(engine_error)?
            {
                return Ok((repo_settings, found));
            }
        }
        let found = store
            .queue_entry(n as i64)
            .await
            .map_err(engine_error)?
            .filter(|e| named_repo.as_deref().is_none_or(|r| e.repo.as_str() == r))
            .ok_or_else(|| not_found(format!("Nothing numbered {n}")))?;
        let repo_settings = repo_for(app, invocation, kind, Some(found.repo.as_str()))?;
        return Ok((repo_settings, found));
    }
    let repo_settings = repo_for(app, invocation, kind, named_repo.as_deref())?;
    let change = match reference {
        QueueRef::Pull(n) | QueueRef::Number(n) => Change::Pull(pr_number(n)?),
        QueueRef::Branch(b) => {
            Change::Branch(BranchName::from_user(&b).map_err(|e| CommandError::Engine(e.into()))?)
        }
    };
    let found = store
        .latest_entry_of(&repo_settings.name, &change)
        .await
        .map_err(engine_error)?
        .ok_or_else(|| not_found(format!("{}{change}", repo_settings.name)))?;
    Ok((repo_settings, found))
}

pub async fn entry_view(
    app: &App,
    repo: &RepoSettings,
    id: i64,
) -> Result<EntryView, CommandError> {
    let entries = app
        .store()
        .queue_entries(&repo.name, &repo.queue.target, RECENT_MS)
        .await
        .map_err(engine_error)?;
    let all = views(app, repo, entries).await?;
    match all.into_iter().find(|v| v.id == id) {
        Some(v) => Ok(v),
        None => {
            let entry = app
                .store()
                .queue_entry(id)
                .await
                .map_err(engine_error)?
                .ok_or_else(|| CommandError::NotHere(format!("entry {id} is gone")))?;
            Ok(view(entry, None, None))
        }
    }
}

/// The submit-queue line of a pull request's sticky comment, while it is in line (or just
/// left it): its position and ETA, kept current as the queue moves.
pub async fn sticky_line(app: &App, repo: &RepoName, number: PrNumber) -> Option<String> {
    let settings = app
        .engine
        .settings()
        .repos
        .iter()
        .find(|r| r.name == *repo)?;
    let entry = app
        .store()
        .latest_entry_of(repo, &Change::Pull(number))
        .await
        .ok()??;
    let view = entry_view(app, settings, entry.id).await.ok()?;
    Some(format!(
        "🚢 **Submit queue**: {}",
        render::entry_line(&view)
    ))
}

/// `queue list`: every queue (or one repo's), its entries with positions and ETAs.
pub async fn list(
    app: &App,
    invocation: &Invocation,
    repo: Option<String>,
) -> Result<(Vec<QueueView>, Vec<EntryView>), CommandError> {
    let named = repo.or(invocation.default_repo.as_ref().map(ToString::to_string));
    let repos: Vec<&RepoSettings> = match named {
        Some(name) => vec![repo_for(
            app,
            invocation,
            CommandKind::QueueList,
            Some(&name),
        )?],
        None => app.engine.settings().repos.iter().collect(),
    };
    let mut queues = Vec::new();
    let mut all = Vec::new();
    for repo in repos {
        let entries = app
            .store()
            .queue_entries(&repo.name, &repo.queue.target, RECENT_MS)
            .await
            .map_err(engine_error)?;
        let row = app
            .store()
            .queue_row(&repo.name, &repo.queue.target)
            .await
            .map_err(engine_error)?;
        let views = views(app, repo, entries).await?;
        queues.push(queue_view(repo, row.as_ref(), &views));
        all.extend(views);
    }
    Ok((queues, all))
}

fn queue_view(repo: &RepoSettings, row: Option<&QueueRow>, views: &[EntryView]) -> QueueView {
    QueueView {
        repo: repo.name.to_string(),
        target: repo.queue.target.to_string(),
        paused: row.is_some_and(|r| r.paused),
        pause_reason: row.and_then(|r| r.pause_reason.clone()),
        paused_by: row.and_then(|r| r.paused_by.clone()),
        length: views.iter().filter(|v| v.position.is_some()).count(),
    }
}

/// `queue pause [reason]` / `queue resume`.
pub async fn set_paused(
    app: &App,
    invocation: &Invocation,
    kind: CommandKind,
    repo: Option<String>,
    pause: Option<String>,
) -> Result<QueueView, CommandError> {
    let repo = repo_for(app, invocation, kind, repo.as_deref())?;
    let reason = pause.map(|r| {
        let r = r.trim().to_string();
        if r.is_empty() {
            format!("paused by {}", invocation.caller.display)
        } else {
            r
        }
    });
    let row = app
        .store()
        .set_queue_paused(
            &repo.name,
            &repo.queue.target,
            reason.as_deref(),
            &invocation.caller.id,
        )
        .await
        .map_err(engine_error)?;
    app.engine
        .nudge_queue(&queue_key(&repo.name, &repo.queue.target));
    let entries = app
        .store()
        .queue_entries(&repo.name, &repo.queue.target, 0)
        .await
        .map_err(engine_error)?;
    let views = views(app, repo, entries).await?;
    Ok(queue_view(repo, Some(&row), &views))
}

/// `queue remove`.
pub async fn remove(
    app: &App,
    invocation: &Invocation,
    entry: Option<QueueRef>,
    repo: Option<String>,
) -> Result<EntryView, CommandError> {
    let (repo, entry) = find_entry(app, invocation, CommandKind::QueueRemove, entry, repo).await?;
    let why = format!("removed by {}", invocation.caller.display);
    let removed = app
        .store()
        .request_queue_remove(entry.id, &invocation.caller.id, &why)
        .await
        .map_err(engine_error)?;
    if removed.is_none() {
        return Err(CommandError::NotHere(format!(
            "{} is not in line any more (it is {}).",
            entry.change.label(&entry.repo),
            entry.state.as_str()
        )));
    }
    app.engine
        .nudge_queue(&queue_key(&repo.name, &repo.queue.target));
    entry_view(app, repo, entry.id).await
}

/// `queue retry`.
pub async fn retry(
    app: &App,
    invocation: &Invocation,
    entry: Option<QueueRef>,
    repo: Option<String>,
) -> Result<EntryView, CommandError> {
    let (repo, entry) = find_entry(app, invocation, CommandKind::QueueRetry, entry, repo).await?;
    let retried = app
        .store()
        .request_queue_retry(entry.id, &invocation.caller.id)
        .await
        .map_err(engine_error)?;
    if retried.is_none() {
        return Err(CommandError::NotHere(format!(
            "{} has not failed (it is {}): only failed entries are retried.",
            entry.change.label(&entry.repo),
            entry.state.as_str()
        )));
    }
    app.engine
        .nudge_queue(&queue_key(&repo.name, &repo.queue.target));
    entry_view(app, repo, entry.id).await
}
