//! Who may run which command, and the audit trail of every command.
//!
//! Every surface turns its own idea of identity into a [`Role`]: a Discord user through the
//! user and role ids listed in `[permissions.discord_users]` / `[permissions.discord_roles]`
//! ([`AccessPolicy::role_for_discord`]), a GitHub user through their permission level on the
//! repository ([`AccessPolicy::role_for_github`]), an API caller through the API token
//! ([`AccessPolicy::role_for_api_token`]). Each command needs a role
//! ([`AccessPolicy::required_role`]); [`AccessPolicy::check`] compares the two and says, in
//! one line, what is missing. A refused command does nothing.
//!
//! Every command a surface runs, refused or not, is written to the audit log with
//! [`audit`]: who ([`Caller`]), where (a place such as `pr acme/shop#7`), what (the
//! command's canonical text) and the [`Outcome`].
//!
//! The policy is built from the config once at start ([`AccessPolicy::from_config`]) and
//! travels in the application context (`crate::app::App`) to every surface and the executor.

use std::collections::HashMap;
use std::fmt;

use anyhow::{anyhow, Context as _};
use envmgr::store::{NewAuditEntry, Store};

use crate::commands::CommandKind;
use crate::config::Config;

/// What someone may do, weakest first. `NoAccess` (written `none`) is below every role: it
/// may run only the commands open to everyone (`help` and `whoami` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    NoAccess,
    Viewer,
    Developer,
    Deployer,
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 5] = [
        Role::NoAccess,
        Role::Viewer,
        Role::Developer,
        Role::Deployer,
        Role::Admin,
    ];

    /// The name used in the config and in replies.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::NoAccess => "none",
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }

    /// The role with this name (any case).
    pub fn parse(name: &str) -> Option<Role> {
        let name = name.trim().to_ascii_lowercase();
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// "the developer role", or "no role" for `NoAccess`.
    pub fn phrase(self) -> String {
        match self {
            Role::NoAccess => "no role".to_string(),
            role => format!("the {} role", role.as_str()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    Cli,
    Api,
    GitHub,
    Discord,
}

impl Surface {
    pub const fn as_str(self) -> &'static str {
        match self {
            Surface::Cli => "cli",
            Surface::Api => "api",
            Surface::GitHub => "github",
            Surface::Discord => "discord",
        }
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who runs a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub surface: Surface,
    /// Stable and surface-qualified, the actor in the audit log and on env timelines:
    /// `github:alice`, `discord:1234`, `api:bob`.
    pub id: String,
    /// How to name them in a reply: `alice`, a Discord display name.
    pub display: String,
}

impl Caller {
    /// A GitHub user, by login.
    pub fn github(login: &str) -> Self {
        Self {
            surface: Surface::GitHub,
            id: format!("github:{login}"),
            display: login.to_string(),
        }
    }

    /// A Discord user, by id, with the name to show.
    pub fn discord(user_id: u64, display: &str) -> Self {
        Self {
            surface: Surface::Discord,
            id: format!("discord:{user_id}"),
            display: display.to_string(),
        }
    }

    /// An HTTP API caller; `actor` is the API's `api:<user>`.
    pub fn api(surface: Surface, actor: &str) -> Self {
        Self {
            surface,
            id: actor.to_string(),
            display: actor.strip_prefix("api:").unwrap_or(actor).to_string(),
        }
    }
}

/// GitHub's permission levels on a repository, weakest first (`push` and `pull` are the
/// older names of `write` and `read`).
pub const GITHUB_LEVELS: [&str; 6] = ["none", "read", "triage", "write", "maintain", "admin"];

/// Why a command was refused. `Display` is one line: "`env up` needs the developer role;
/// you have viewer."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub command: CommandKind,
    pub needed: Role,
    pub have: Role,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let have = match self.have {
            Role::NoAccess => "no role".to_string(),
            role => role.as_str().to_string(),
        };
        write!(
            f,
            "`{}` needs {}; you have {have}.",
            self.command.name(),
            self.needed.phrase()
        )
    }
}

impl std::error::Error for Refusal {}

/// How a command ended, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused(String),
    Error(String),
}

impl Outcome {
    pub fn refused(refusal: &Refusal) -> Self {
        Outcome::Refused(refusal.to_string())
    }

    /// An error, on one line.
    pub fn error(message: impl fmt::Display) -> Self {
        Outcome::Error(one_line(&message.to_string()))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Error(why) => write!(f, "error: {why}"),
        }
    }
}

/// Who may do what, built from `[permissions]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    default_role: Role,
    api_token_role: Role,
    discord_users: HashMap<u64, Role>,
    discord_roles: HashMap<u64, Role>,
    /// Indexed like [`GITHUB_LEVELS`].
    github: [Role; GITHUB_LEVELS.len()],
    /// Indexed like [`CommandKind::ALL`].
    commands: [Role; CommandKind::ALL.len()],
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self {
            default_role: Role::Viewer,
            api_token_role: Role::Admin,
            discord_users: HashMap::new(),
            discord_roles: HashMap::new(),
            github: [
                Role::NoAccess,  // none
                Role::Viewer,    // read
                Role::Viewer,    // triage
                Role::Developer, // write
                Role::Deployer,  // maintain
                Role::Admin,     // admin
            ],
            commands: CommandKind::ALL.map(default_required_role),
        }
    }
}

/// The role a command needs unless `[permissions.commands]` says otherwise.
pub const fn default_required_role(kind: CommandKind) -> Role {
    match kind {
        CommandKind::Help | CommandKind::WhoAmI => Role::NoAccess,
        CommandKind::EnvList
        | CommandKind::EnvStatus
        | CommandKind::QueueList
        | CommandKind::QueueStatus
        | CommandKind::RolloutStatus => Role::Viewer,
        // What reaches production, and when: for who decides what ships.
        CommandKind::Release
        | CommandKind::RolloutPause
        | CommandKind::RolloutResume
        | CommandKind::RolloutPromote
        | CommandKind::RolloutRollback
        | CommandKind::RolloutApprove
        | CommandKind::ChannelFreeze
        | CommandKind::ChannelUnfreeze => Role::Deployer,
        // Closing the tree holds everyone's changes: for who decides what ships.
        CommandKind::QueuePause | CommandKind::QueueResume => Role::Deployer,
        // A pinned env costs for as long as it stands: for who decides what runs.
        CommandKind::EnvPin | CommandKind::EnvUnpin => Role::Deployer,
        CommandKind::QueueAdd | CommandKind::QueueRemove | CommandKind::QueueRetry => {
            Role::Developer
        }
        // A service's output is whatever its code prints, secrets included (redaction only
        // hides the values it knows): as much as running code, so it needs the same role.
        CommandKind::EnvLogs
        | CommandKind::EnvUp
        | CommandKind::EnvDown
        | CommandKind::EnvExtend
        | CommandKind::EnvSleep
        | CommandKind::EnvWake
        | CommandKind::Test
        // Approving runs a fork's code; GitHub's write permission has always been enough.
        | CommandKind::Approve => Role::Developer,
    }
}

impl AccessPolicy {
    /// The policy of the `[permissions]` table, validated: every role one of `none`,
    /// `viewer`, `developer`, `deployer`, `admin`; every command a known one; every Discord
    /// id a number; every GitHub level one of GitHub's.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let config = &config.permissions;
        let mut policy = AccessPolicy::default();
        if let Some(name) = &config.default_role {
            policy.default_role = role_named(name).context("[permissions] default_role")?;
        }
        if let Some(name) = &config.api_token_role {
            policy.api_token_role = role_named(name).context("[permissions] api_token_role")?;
        }
        for (table, source, target) in [
            (
                "discord_users",
                &config.discord_users,
                &mut policy.discord_users,
            ),
            (
                "discord_roles",
                &config.discord_roles,
                &mut policy.discord_roles,
            ),
        ] {
            for (id, name) in source {
                let context = || format!("[permissions.{table}] \"{id}\"");
                let number: u64 = id.trim().parse().map_err(|_| {
                    anyhow!(
                        "{}: a Discord id is a number, like \"123456789012345678\"",
                        context()
                    )
                })?;
                target.insert(number, role_named(name).with_context(context)?);
            }
        }
        for (level, name) in &config.github {
            let index = github_level_index(level).ok_or_else(|| {
                anyhow!(
                    "[permissions.github] \"{level}\" is not a GitHub permission level; use one of {}",
                    GITHUB_LEVELS.join(", ")
                )
            })?;
            policy.github[index] =
                role_named(name).with_context(|| format!("[permissions.github] \"{level}\""))?;
        }
        for (command, name) in &config.commands {
            let kind = CommandKind::from_name(command).ok_or_else(|| {
                anyhow!(
                    "[permissions.commands] \"{command}\" is not a command; commands are {}",
                    CommandKind::ALL
                        .iter()
                        .map(|k| format!("\"{}\"", k.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            policy.commands[kind.index()] = role_named(name)
                .with_context(|| format!("[permissions.commands] \"{command}\""))?;
        }
        Ok(policy)
    }

    /// A Discord user's role: the highest of their own entry and their Discord roles'
    /// entries; `default_role` when none of them is listed.
    pub fn role_for_discord(&self, user_id: u64, role_ids: &[u64]) -> Role {
        std::iter::once(user_id)
            .map(|id| self.discord_users.get(&id))
            .chain(role_ids.iter().map(|id| self.discord_roles.get(id)))
            .flatten()
            .copied()
            .max()
            .unwrap_or(self.default_role)
    }

    /// The role of a GitHub user with this permission level on the repository (`admin`,
    /// `maintain`, `write`/`push`, `triage`, `read`/`pull`, `none`; anything else counts as
    /// `none`).
    pub fn role_for_github(&self, permission: &str) -> Role {
        let index = github_level_index(permission).unwrap_or(0);
        self.github[index]
    }

    /// The weakest GitHub permission level that gives `role`, if any does.
    pub fn github_level_for(&self, role: Role) -> Option<&'static str> {
        GITHUB_LEVELS
            .iter()
            .zip(self.github)
            .find(|(_, given)| *given >= role)
            .map(|(level, _)| *level)
    }

    /// The role of whoever holds the API token (everyone on loopback when no token is set).
    pub fn role_for_api_token(&self) -> Role {
        self.api_token_role
    }

    /// The role a command needs.
    pub fn required_role(&self, kind: CommandKind) -> Role {
        self.commands[kind.index()]
    }

    /// `Ok` when `caller_role` may run `kind`; otherwise what is missing.
    pub fn check(&self, caller_role: Role, kind: CommandKind) -> Result<(), Refusal> {
        let needed = self.required_role(kind);
        if caller_role >= needed {
            Ok(())
        } else {
            Err(Refusal {
                command: kind,
                needed,
                have: caller_role,
            })
        }
    }

    /// The commands `role` may run, in help order (for `whoami`).
    pub fn allowed_commands(&self, role: Role) -> Vec<CommandKind> {
        CommandKind::ALL
            .into_iter()
            .filter(|kind| self.check(role, *kind).is_ok())
            .collect()
    }
}

fn role_named(name: &str) -> anyhow::Result<Role> {
    Role::parse(name).ok_or_else(|| {
        anyhow!(
            "\"{name}\" is not a role; use one of {}",
            Role::ALL.map(Role::as_str).join(", ")
        )
    })
}

fn github_level_index(level: &str) -> Option<usize> {
    let level = match level.trim().to_ascii_lowercase().as_str() {
        "push" => "write".to_string(),
        "pull" => "read".to_string(),
        other => other.to_string(),
    };
    GITHUB_LEVELS.iter().position(|l| *l == level)
}

/// Writes one command to the audit log (and the server log). Never fails the command: a
/// store error is logged.
pub async fn audit(store: &Store, caller: &Caller, place: &str, command: &str, outcome: &Outcome) {
    let entry = NewAuditEntry {
        surface: caller.surface.as_str().to_string(),
        actor: caller.id.clone(),
        place: place.to_string(),
        command: command.to_string(),
        // An error's text may quote a URL or a token (git's, the runtime's): the log keeps
        // neither. Env secrets never reach these texts; they come from Slipway, not a service.
        outcome: redact(&outcome.to_string()),
    };
    tracing::info!(surface = %entry.surface, actor = %entry.actor, place = %entry.place, command = %entry.command, outcome = %entry.outcome, "audit");
    if let Err(e) = store.record_audit(&entry).await {
        tracing::warn!(error = %e, actor = %entry.actor, command = %entry.command, "cannot write the audit log");
    }
}

/// Newlines and runs of whitespace become single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` without URL userinfo and without token shapes (what the audit log may keep).
fn redact(text: &str) -> String {
    envmgr::snippet::Redactor::default().redact_line(&envmgr::snippet::strip_url_credentials(text))
}

#[cfg(test)]
mod tests;
