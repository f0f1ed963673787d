//! Git access through the `git` program, one bare mirror per repo under the data directory.
//! Files are read straight from commits (`git cat-file`, `git archive`), so nothing from a
//! branch is ever checked out onto disk and no path from a branch can escape. The submit
//! queue's candidates are built and landed from the same mirrors ([`candidate`]).

mod candidate;

pub use candidate::{
    CandidateBuild, ChangeToMerge, CommitIdentity, MergeMethod, PushOutcome, UnknownMergeMethod,
};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::names::{BranchName, CommitSha, RepoName};
use crate::settings::RepoSettings;
use crate::snippet::{display_url, strip_url_credentials, REDACTED};

const FETCH_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, thiserror::Error)]
pub enum GitError {
    #[error("branch `{branch}` does not exist in {url}")]
    BranchNotFound { branch: String, url: String },
    #[error("commit {commit} is not in {url} (was the branch force-pushed?)")]
    CommitNotFound { commit: String, url: String },
    #[error("`{path}` does not exist at commit {commit}")]
    FileNotFound { path: String, commit: String },
    #[error("path `{path}` is not allowed: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("`{path}` is {size} bytes at commit {commit}; the limit is {limit} bytes")]
    TooLarge {
        path: String,
        commit: String,
        size: u64,
        limit: u64,
    },
    #[error("commit {commit} is not in the mirror of {repo}; fetch it first")]
    NotInMirror { commit: String, repo: String },
    #[error("{commit} does not contain {expected}, so moving `{branch}` to it would drop commits")]
    NotFastForward {
        branch: String,
        expected: String,
        commit: String,
    },
    #[error("the remote refused to move `{branch}`: {reason}")]
    PushRejected { branch: String, reason: String },
    #[error("git {action} failed: {detail}")]
    Failed { action: String, detail: String },
}

/// A path inside a repository, normalised and proven not to leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPath(String);

impl RepoPath {
    /// Joins `relative` onto `base` (both inside the repo) and normalises `.` and `..`.
    pub fn resolve(base: &str, relative: &str) -> Result<Self, GitError> {
        let bad = |why| GitError::BadPath {
            path: relative.to_string(),
            why,
        };
        if relative.starts_with('/') || relative.starts_with('~') {
            return Err(bad("it must be relative to the repository"));
        }
        if relative.contains("://") || relative.starts_with("git@") {
            return Err(bad("remote build contexts are not supported"));
        }
        if relative
            .bytes()
            .any(|b| b.is_ascii_control() || b == b'\\' || b == b':')
        {
            return Err(bad("it contains characters that are not allowed"));
        }
        let mut parts: Vec<&str> = base
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        for part in relative.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(bad("it points outside the repository"));
                    }
                }
                other => parts.push(other),
            }
        }
        Ok(Self(parts.join("/")))
    }

    /// The folder part of a path to a file ("" for the repository root).
    pub fn parent(&self) -> String {
        self.0
            .rsplit_once('/')
            .map(|(dir, _)| dir.to_string())
            .unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `rev:path` form git takes; the root is the commit's tree itself.
    fn spec(&self, commit: &CommitSha) -> String {
        format!("{}:{}", commit.as_str(), self.0)
    }
}

/// All repos' mirrors. Operations on one mirror are serialised; different repos run in parallel.
#[derive(Clone)]
pub struct GitMirrors {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<RepoName, Arc<tokio::sync::Mutex<()>>>>>,
}

impl GitMirrors {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("git"),
            locks: Default::default(),
        }
    }

    fn mirror(&self, repo: &RepoName) -> PathBuf {
        self.root.join(format!("{}.git", repo.as_str()))
    }

    fn lock(&self, repo: &RepoName) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("lock map poisoned")
            .entry(repo.clone())
            .or_default()
            .clone()
    }

    /// Serialises changes to one mirror across processes too (replicas sharing a data_dir):
    /// an exclusive lock on `<mirror>.lock`, held until the returned file is dropped. Taken
    /// after the in-process lock, so a process waits on it with one task at most.
    async fn process_lock(&self, repo: &RepoName) -> Result<std::fs::File, GitError> {
        let failed = |e: std::io::Error| GitError::Failed {
            action: "lock".into(),
            detail: e.to_string(),
        };
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(failed)?;
        let path = self.root.join(format!("{}.git.lock", repo.as_str()));
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| GitError::Failed {
            action: "lock".into(),
            detail: e.to_string(),
        })?
        .map_err(failed)
    }

    /// Fetches `branch` (or any ref, e.g. `refs/pull/7/head`) and returns the commit it points to.
    pub async fn fetch(&self, repo: &RepoSettings, git_ref: &str) -> Result<CommitSha, GitError> {
        let lock = self.lock(&repo.name);
        let _guard = lock.lock().await;
        let _across_processes = self.process_lock(&repo.name).await?;
        let mirror = self.mirror(&repo.name);
        if !mirror.join("HEAD").exists() {
            tokio::fs::create_dir_all(&self.root)
                .await
                .map_err(|e| GitError::Failed {
                    action: "init".into(),
                    detail: e.to_string(),
                })?;
            run(
                &self.root,
                &["init", "--bare", "--quiet", path_str(&mirror)?],
                "init",
            )
            .await?;
        }
        let source = if git_ref.starts_with("refs/") {
            git_ref.to_string()
        } else {
            format!("refs/heads/{git_ref}")
        };
        let local = format!("refs/slipway/{}", source.trim_start_matches("refs/"));
        let refspec = format!("+{source}:{local}");
        let fetch = tokio::time::timeout(
            FETCH_TIMEOUT,
            run_remote(
                &mirror,
                repo,
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--",
                    &repo.url,
                    &refspec,
                ],
                "fetch",
            ),
        )
        .await
        .map_err(|_| GitError::Failed {
            action: "fetch".into(),
            detail: format!("timed out after {FETCH_TIMEOUT:?}"),
        })?;
        if let Err(GitError::Failed { detail, .. }) = &fetch {
            if detail.contains("couldn't find remote ref") || detail.contains("not our ref") {
                return Err(GitError::BranchNotFound {
                    branch: git_ref.trim_start_matches("refs/heads/").to_string(),
                    url: display_url(&repo.url),
                });
            }
        }
        fetch?;
        let out = run(
            &mirror,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{local}^{{commit}}"),
            ],
            "rev-parse",
        )
        .await?;
        CommitSha::parse(&String::from_utf8_lossy(&out)).map_err(|e| GitError::Failed {
            action: "rev-parse".into(),
            detail: e.to_string(),
        })
    }

    /// Fetches the commit `want` (a pull request's head) by trying `refs` in order, then the
    /// commit itself. Errors unless `want` is in the mirror afterwards: Slipway deploys exactly
    /// the commit the forge reported, never whatever a ref points to by then.
    pub async fn fetch_commit(
        &self,
        repo: &RepoSettings,
        refs: &[String],
        want: &CommitSha,
    ) -> Result<CommitSha, GitError> {
        for git_ref in refs {
            match self.fetch(repo, git_ref).await {
                Ok(commit) if &commit == want => return Ok(commit),
                Ok(_) | Err(GitError::BranchNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if self.has_commit(&repo.name, want).await {
            return Ok(want.clone());
        }
        // Servers (GitHub included) hand out reachable commits by id.
        let lock = self.lock(&repo.name);
        let _guard = lock.lock().await;
        let _across_processes = self.process_lock(&repo.name).await?;
        let refspec = format!("{}:refs/slipway/commits/{}", want.as_str(), want.as_str());
        let fetched = run_remote(
            &self.mirror(&repo.name),
            repo,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--",
                &repo.url,
                &refspec,
            ],
            "fetch",
        )
        .await;
        if fetched.is_ok() && self.has_commit(&repo.name, want).await {
            return Ok(want.clone());
        }
        Err(GitError::CommitNotFound {
            commit: want.short().to_string(),
            url: display_url(&repo.url),
        })
    }

    async fn has_commit(&self, repo: &RepoName, commit: &CommitSha) -> bool {
        let spec = format!("{}^{{commit}}", commit.as_str());
        run(&self.mirror(repo), &["cat-file", "-e", &spec], "cat-file")
            .await
            .is_ok()
    }

    /// The commit an id (full, or abbreviated to at least 4 hex digits) names in the repo's
    /// mirror; the id must be unambiguous there.
    pub async fn resolve_commit(
        &self,
        repo: &RepoSettings,
        id: &str,
    ) -> Result<CommitSha, GitError> {
        let not_found = || GitError::CommitNotFound {
            commit: id.chars().take(40).collect(),
            url: display_url(&repo.url),
        };
        if !(4..=40).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let spec = format!("{}^{{commit}}", id.to_ascii_lowercase());
        let out = run(
            &self.mirror(&repo.name),
            &["rev-parse", "--verify", "--quiet", &spec],
            "rev-parse",
        )
        .await
        .map_err(|_| not_found())?;
        CommitSha::parse(String::from_utf8_lossy(&out).trim()).map_err(|_| not_found())
    }

    /// Fetches a branch by name.
    pub async fn fetch_branch(
        &self,
        repo: &RepoSettings,
        branch: &BranchName,
    ) -> Result<CommitSha, GitError> {
        // Fully qualified, so git's DWIM can never resolve a branch-looking name to a pull
        // request head, a tag or a remote-tracking ref.
        self.fetch(repo, &format!("refs/heads/{}", branch.as_str()))
            .await
    }

    /// The contents of one file at `commit`.
    pub async fn read_file(
        &self,
        repo: &RepoName,
        commit: &CommitSha,
        path: &RepoPath,
    ) -> Result<Vec<u8>, GitError> {
        let mirror = self.mirror(repo);
        let spec = path.spec(commit);
        let kind = run(&mirror, &["cat-file", "-t", &spec], "cat-file").await;
        match kind {
            Ok(kind) if kind.trim_ascii() == b"blob" => {
                run(&mirror, &["cat-file", "blob", &spec], "cat-file").await
            }
            _ => Err(GitError::FileNotFound {
                path: path.as_str().to_string(),
                commit: commit.short().to_string(),
            }),
        }
    }

    /// Like [`Self::read_file`], but a file over `limit` bytes is refused from its size
    /// (`git cat-file -s`) without reading it, so a huge blob never reaches memory.
    pub async fn read_file_limited(
        &self,
        repo: &RepoName,
        commit: &CommitSha,
        path: &RepoPath,
        limit: u64,
    ) -> Result<Vec<u8>, GitError> {
        let mirror = self.mirror(repo);
        let spec = path.spec(commit);
        let not_found = || GitError::FileNotFound {
            path: path.as_str().to_string(),
            commit: commit.short().to_string(),
        };
        match run(&mirror, &["cat-file", "-t", &spec], "cat-file").await {
            Ok(kind) if kind.trim_ascii() == b"blob" => {}
            _ => return Err(not_found()),
        }
        let size = run(&mirror, &["cat-file", "-s", &spec], "cat-file").await?;
        let size: u64 =
            String::from_utf8_lossy(&size)
                .trim()
                .parse()
                .map_err(|_| GitError::Failed {
                    action: "cat-file -s".into(),
                    detail: "git printed no size".into(),
                })?;
        if size > limit {
            return Err(GitError::TooLarge {
                path: path.as_str().to_string(),
                commit: commit.short().to_string(),
                size,
                limit,
            });
        }
        run(&mirror, &["cat-file", "blob", &spec], "cat-file").await
    }

    /// The id of the tree at `dir` in `commit`: equal ids mean equal contents, so it names
    /// built images and lets unchanged services keep their containers.
    pub async fn tree_id(
        &self,
        repo: &RepoName,
        commit: &CommitSha,
        dir: &RepoPath,
    ) -> Result<String, GitError> {
        let mirror = self.mirror(repo);
        let spec = if dir.as_str().is_empty() {
            format!("{}^{{tree}}", commit.as_str())
        } else {
            dir.spec(commit)
        };
        let not_found = || GitError::FileNotFound {
            path: dir.as_str().to_string(),
            commit: commit.short().to_string(),
        };
        let kind = run(&mirror, &["cat-file", "-t", &spec], "cat-file")
            .await
            .map_err(|_| not_found())?;
        if kind.trim_ascii() != b"tree" {
            return Err(GitError::BadPath {
                path: dir.as_str().to_string(),
                why: "it is not a folder",
            });
        }
        let out = run(
            &mirror,
            &["rev-parse", "--verify", "--quiet", &spec],
            "rev-parse",
        )
        .await
        .map_err(|_| not_found())?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// A tar of folder `dir` at `commit`, the build context for a service.
    pub async fn archive(
        &self,
        repo: &RepoName,
        commit: &CommitSha,
        dir: &RepoPath,
    ) -> Result<Bytes, GitError> {
        let tree = self.tree_id(repo, commit, dir).await?;
        let out = run(
            &self.mirror(repo),
            &["archive", "--format=tar", &tree],
            "archive",
        )
        .await?;
        Ok(Bytes::from(out))
    }
}

fn path_str(path: &Path) -> Result<&str, GitError> {
    path.to_str().ok_or_else(|| GitError::Failed {
        action: "init".into(),
        detail: "data_dir is not valid UTF-8".into(),
    })
}

/// Runs git with explicit arguments (never a shell) and returns its stdout.
async fn run(dir: &Path, args: &[&str], action: &str) -> Result<Vec<u8>, GitError> {
    output(git_command(dir, args, None), action, None).await
}

/// As [`run`], for a command that talks to `repo`'s remote: with its credentials, and with
/// them and the URL's userinfo kept out of the error.
async fn run_remote(
    dir: &Path,
    repo: &RepoSettings,
    args: &[&str],
    action: &str,
) -> Result<Vec<u8>, GitError> {
    run_remote_finished(dir, repo, args, action)
        .await?
        .stdout_if_success(action)
}

/// As [`run_remote`], but a command that ran and failed is not an error: the caller reads
/// its exit status and output (already scrubbed of credentials).
async fn run_remote_finished(
    dir: &Path,
    repo: &RepoSettings,
    args: &[&str],
    action: &str,
) -> Result<Finished, GitError> {
    let Some(credentials) = &repo.credentials else {
        return finish(git_command(dir, args, None), None, action, None).await;
    };
    let token = credentials
        .token
        .current()
        .await
        .map_err(|e| GitError::Failed {
            action: action.into(),
            detail: format!(
                "cannot get a token for git: {}",
                strip_url_credentials(&format!("{e:#}"))
            ),
        })?;
    let login = Login {
        username: &credentials.username,
        token: &token,
    };
    finish(
        git_command(dir, args, Some(login)),
        None,
        action,
        Some(login),
    )
    .await
}

/// What git authenticates with, for one command.
#[derive(Clone, Copy)]
struct Login<'a> {
    username: &'a str,
    token: &'a SecretString,
}

/// The environment variables that hold the credentials for [`CREDENTIAL_HELPER`].
const USERNAME_VAR: &str = "SLIPWAY_GIT_USERNAME";
const TOKEN_VAR: &str = "SLIPWAY_GIT_TOKEN";

/// A credential helper that answers git's `get` from the two variables above. It is itself
/// configuration (no secret in it); the token only ever sits in git's environment, which,
/// unlike a command line, other users cannot read from `ps`.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$SLIPWAY_GIT_USERNAME\" \"$SLIPWAY_GIT_TOKEN\"; }; f";

/// The git command: never a shell, never a prompt, and credentials (when given) through
/// the environment only: `GIT_CONFIG_COUNT`/`KEY`/`VALUE` set the helper (after an empty
/// value that drops any helper configured elsewhere), the helper reads the variables.
fn git_command(dir: &Path, args: &[&str], login: Option<Login<'_>>) -> Command {
    let mut command = Command::new("git");
    command
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env_remove(USERNAME_VAR)
        .env_remove(TOKEN_VAR)
        .kill_on_drop(true);
    if let Some(login) = login {
        command
            .env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "credential.helper")
            .env("GIT_CONFIG_VALUE_0", "")
            .env("GIT_CONFIG_KEY_1", "credential.helper")
            .env("GIT_CONFIG_VALUE_1", CREDENTIAL_HELPER)
            .env(USERNAME_VAR, login.username)
            .env(TOKEN_VAR, login.token.expose_secret());
    }
    command
}

/// Runs `command` and returns its stdout; git's stderr becomes the error, without any
/// URL userinfo (git quotes the URL it could not reach) and without the token.
async fn output(
    command: Command,
    action: &str,
    login: Option<Login<'_>>,
) -> Result<Vec<u8>, GitError> {
    finish(command, None, action, login)
        .await?
        .stdout_if_success(action)
}

/// How a git command ended. `stderr` is already free of URL userinfo and the token.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Finished {
    fn stdout_if_success(self, action: &str) -> Result<Vec<u8>, GitError> {
        if self.status.success() {
            return Ok(self.stdout);
        }
        Err(self.failure(action))
    }

    /// The error for a command that failed: its stderr, or its exit status when silent.
    fn failure(&self, action: &str) -> GitError {
        GitError::Failed {
            action: action.into(),
            detail: if self.stderr.is_empty() {
                self.status.to_string()
            } else {
                self.stderr.clone()
            },
        }
    }
}

/// Runs `command`, feeding it `stdin` when given; an error only when git could not run.
async fn finish(
    mut command: Command,
    stdin: Option<&[u8]>,
    action: &str,
    login: Option<Login<'_>>,
) -> Result<Finished, GitError> {
    let could_not_run = |e: std::io::Error| GitError::Failed {
        action: action.into(),
        detail: format!("could not run git: {e}"),
    };
    let output = match stdin {
        None => command.output().await.map_err(could_not_run)?,
        Some(input) => {
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(could_not_run)?;
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // Fed while the output is read, so neither side can fill a pipe and stall.
            let feed = async move {
                let written = pipe.write_all(input).await;
                drop(pipe); // end of input
                written
            };
            let (written, output) = tokio::join!(feed, child.wait_with_output());
            let output = output.map_err(could_not_run)?;
            // A git that stopped reading because it failed explains itself on stderr.
            if let (Err(e), true) = (written, output.status.success()) {
                return Err(could_not_run(e));
            }
            output
        }
    };
    let mut stderr = strip_url_credentials(String::from_utf8_lossy(&output.stderr).trim());
    if let Some(login) = login {
        let token = login.token.expose_secret();
        if !token.is_empty() {
            stderr = stderr.replace(token, REDACTED);
        }
    }
    Ok(Finished {
        status: output.status,
        stdout: output.stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
    }

    /// Two processes' mirrors on one data dir (replicas sharing it) fetching one repo at
    /// once, from an empty dir: every fetch succeeds and finds its branch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mirrors_shared_between_processes_fetch_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = dir.path().join("upstream");
        std::fs::create_dir_all(&upstream).unwrap();
        git(&upstream, &["init", "-q", "--initial-branch=main"]);
        std::fs::write(upstream.join("f"), "x").unwrap();
        git(&upstream, &["add", "-A"]);
        git(&upstream, &["commit", "-q", "-m", "x"]);
        for i in 0..8 {
            git(&upstream, &["branch", &format!("b{i}")]);
        }
        let repo = RepoSettings {
            channels: Vec::new(),
            name: RepoName::parse("shared").unwrap(),
            url: upstream.display().to_string(),
            env_file: "compose.yml".into(),
            default_ttl: std::time::Duration::from_secs(60),
            test_timeout: std::time::Duration::from_secs(60),
            secret_env: vec![],
            credentials: None,
            queue: Default::default(),
            idle: Default::default(),
            max_envs: None,
        };
        for round in 0..5 {
            let data = dir.path().join(format!("data{round}"));
            // Separate instances, nothing shared in memory, as in two processes; each pair
            // of fetches asks for one branch at the same moment (one ref to update).
            let mirrors: Vec<GitMirrors> = (0..4).map(|_| GitMirrors::new(&data)).collect();
            let fetches: Vec<_> = (0..32)
                .map(|i| {
                    let mirrors = mirrors[i % 4].clone();
                    let repo = repo.clone();
                    tokio::spawn(async move {
                        let branch = BranchName::from_user(&format!("b{}", i % 2)).unwrap();
                        mirrors.fetch_branch(&repo, &branch).await
                    })
                })
                .collect();
            for fetch in fetches {
                fetch.await.unwrap().expect("every fetch succeeds");
            }
        }
    }

    #[test]
    fn credentials_reach_git_through_its_environment_never_its_arguments() {
        let token = SecretString::from("tok-sixteen-chars-1234");
        let login = Login {
            username: "x-access-token",
            token: &token,
        };
        let url = "https://git.example.com/shop.git";
        let command = git_command(
            Path::new("/"),
            &["fetch", "--", url, "+refs/heads/main:refs/x"],
            Some(login),
        );
        let command = command.as_std();
        for arg in command.get_args() {
            let arg = arg.to_string_lossy();
            assert!(
                !arg.contains("tok-sixteen"),
                "token on the command line: {arg}"
            );
        }
        let envs: std::collections::HashMap<String, Option<String>> = command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let get = |key: &str| envs.get(key).cloned().flatten();
        assert_eq!(get(TOKEN_VAR).as_deref(), Some("tok-sixteen-chars-1234"));
        assert_eq!(get(USERNAME_VAR).as_deref(), Some("x-access-token"));
        assert_eq!(
            get("GIT_CONFIG_KEY_1").as_deref(),
            Some("credential.helper")
        );
        let helper = get("GIT_CONFIG_VALUE_1").unwrap();
        assert!(
            !helper.contains("tok-sixteen"),
            "the helper holds no secret"
        );
        assert_eq!(get("GIT_TERMINAL_PROMPT").as_deref(), Some("0"));

        // Without credentials, none leak in from the server's own environment.
        let bare = git_command(Path::new("/"), &["fetch"], None);
        let removed = bare
            .as_std()
            .get_envs()
            .any(|(k, v)| k == TOKEN_VAR && v.is_none());
        assert!(removed);
    }

    #[tokio::test]
    async fn the_credential_helper_answers_git_with_the_environment() {
        // The helper as git runs it: `sh -c '<helper> "$@"' <helper> get`.
        let helper = CREDENTIAL_HELPER.trim_start_matches('!');
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{helper} \"$@\""))
            .arg("helper")
            .arg("get")
            .env(USERNAME_VAR, "oauth2")
            .env(TOKEN_VAR, "t0k3n with spaces")
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "username=oauth2\npassword=t0k3n with spaces\n"
        );
    }

    #[tokio::test]
    async fn git_errors_never_carry_url_userinfo_or_the_token() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), &["init", "--bare", "--quiet"], "init")
            .await
            .unwrap();
        let repo = RepoSettings {
            channels: Vec::new(),
            name: RepoName::parse("shop").unwrap(),
            url: "https://oauth2:URLSECRET123@127.0.0.1:1/nothing.git".into(),
            env_file: "compose.yml".into(),
            default_ttl: Duration::from_secs(60),
            test_timeout: Duration::from_secs(60),
            secret_env: vec![],
            credentials: Some(crate::settings::GitCredentials {
                username: "x-access-token".into(),
                token: crate::settings::GitToken::Fixed("KEYSECRET456".into()),
            }),
            queue: Default::default(),
            idle: Default::default(),
            max_envs: None,
        };
        let mirrors = GitMirrors::new(dir.path());
        let error = mirrors.fetch(&repo, "main").await.unwrap_err().to_string();
        assert!(
            !error.contains("URLSECRET123") && !error.contains("oauth2:"),
            "{error}"
        );
        assert!(!error.contains("KEYSECRET456"), "{error}");
        let missing = GitError::BranchNotFound {
            branch: "main".into(),
            url: display_url(&repo.url),
        };
        assert_eq!(
            missing.to_string(),
            "branch `main` does not exist in https://127.0.0.1:1/nothing.git"
        );
    }

    #[test]
    fn repo_paths_cannot_escape() {
        assert_eq!(
            RepoPath::resolve("compose", "demo/web").unwrap().as_str(),
            "compose/demo/web"
        );
        assert_eq!(RepoPath::resolve("a/b", "../c").unwrap().as_str(), "a/c");
        assert_eq!(RepoPath::resolve("", ".").unwrap().as_str(), "");
        for bad in [
            "../x",
            "a/../../x",
            "/etc",
            "~/x",
            "https://example.com/x.git",
            "a\\b",
            "c:x",
        ] {
            assert!(RepoPath::resolve("", bad).is_err(), "{bad}");
        }
    }
}
