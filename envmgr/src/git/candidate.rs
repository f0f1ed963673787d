//! The submit queue's git side. A candidate is the target's head with each queued change
//! applied in order, built in the bare mirror as Slipway's own commits (`git merge-tree
//! --write-tree`, then `git commit-tree`): nothing is checked out anywhere, so no path from a
//! branch ever reaches the disk. Landing moves the target on the remote only from the value
//! the candidate was built on (a compare-and-swap push, never a force) and recognises a push
//! that already happened, so a landing retried after a crash never lands twice.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{finish, git_command, run_remote_finished, Finished, GitError, GitMirrors};
use crate::names::{BranchName, CommitSha, RepoName};
use crate::settings::RepoSettings;

/// Where built candidates are kept reachable, one ref each, so the mirror's gc keeps them
/// while they are tested and landed.
const CANDIDATE_REFS: &str = "refs/slipway/candidates/";

/// How a change joins the target branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    /// One merge commit per change; the change's head stays in the history.
    Merge,
    /// One commit per change, with the change's whole diff and a single parent.
    Squash,
    /// Each of the change's own commits replayed on top, in order.
    Rebase,
}

impl MergeMethod {
    pub fn parse(value: &str) -> Result<Self, UnknownMergeMethod> {
        match value {
            "merge" => Ok(Self::Merge),
            "squash" => Ok(Self::Squash),
            "rebase" => Ok(Self::Rebase),
            other => Err(UnknownMergeMethod(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Squash => "squash",
            Self::Rebase => "rebase",
        }
    }
}

impl FromStr for MergeMethod {
    type Err = UnknownMergeMethod;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl fmt::Display for MergeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown merge method `{0}`: use merge, squash or rebase")]
pub struct UnknownMergeMethod(String);

/// One queued change: the head it was approved at, and how commits name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeToMerge {
    pub head: CommitSha,
    /// E.g. `shop#42: Add cart (@ernie)` or `feature-x`.
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateBuild {
    /// Every change applied; `tree` is the result's tree id, which keys test results.
    Built { commit: CommitSha, tree: String },
    /// `changes[change]` does not apply on top of the base and the changes before it.
    Conflict { change: usize, files: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The branch moved from the expected commit to the candidate.
    Pushed,
    /// The branch already was at the candidate: an earlier push went through.
    AlreadyThere,
    /// Someone else moved the branch (or deleted it: `None`); nothing was pushed.
    Moved { now: Option<CommitSha> },
}

/// Who Slipway's commits are by, and when. The same identity, time and inputs give the
/// same commit ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitIdentity {
    pub name: String,
    pub email: String,
    /// Seconds since the Unix epoch, written in UTC.
    pub time: u64,
}

impl CommitIdentity {
    /// `Slipway <slipway@localhost>`, now.
    pub fn slipway_now() -> Self {
        Self {
            name: "Slipway".into(),
            email: "slipway@localhost".into(),
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn person(&self) -> Person {
        Person {
            name: self.name.clone(),
            email: self.email.clone(),
            // `@` makes git read the number as a Unix time whatever its size.
            date: format!("@{} +0000", self.time),
        }
    }
}

impl GitMirrors {
    /// Builds `base` plus each change in order, as Slipway's commits by
    /// [`CommitIdentity::slipway_now`]. See [`Self::build_candidate_as`].
    pub async fn build_candidate(
        &self,
        repo: &RepoName,
        base: &CommitSha,
        changes: &[ChangeToMerge],
        method: MergeMethod,
    ) -> Result<CandidateBuild, GitError> {
        self.build_candidate_as(repo, base, changes, method, &CommitIdentity::slipway_now())
            .await
    }

    /// Builds `base` plus each change in order, in the mirror, committed by `identity`:
    /// - merge: one merge commit per change, parents `[previous, head]`, "Merge <title>";
    /// - squash: one commit per change with the merged tree, parent `previous`, "<title>";
    /// - rebase: the change's own commits (first-parent, from where it forked from
    ///   `previous`), replayed oldest first with their authors and messages; a commit whose
    ///   changes are already there is dropped, as `git rebase` does.
    ///
    /// The mirror must already hold `base` and every head. The first change that does not
    /// apply stops the build and is reported with its conflicting files.
    pub async fn build_candidate_as(
        &self,
        repo: &RepoName,
        base: &CommitSha,
        changes: &[ChangeToMerge],
        method: MergeMethod,
        identity: &CommitIdentity,
    ) -> Result<CandidateBuild, GitError> {
        let lock = self.lock(repo);
        let _guard = lock.lock().await;
        let _across_processes = self.process_lock(repo).await?;
        let wanted: Vec<&CommitSha> = std::iter::once(base)
            .chain(changes.iter().map(|c| &c.head))
            .collect();
        self.require_commits(repo, &wanted).await?;
        let builder = Builder {
            mirror: &self.mirror(repo),
            committer: identity.person(),
        };
        let mut tip = base.clone();
        for (index, change) in changes.iter().enumerate() {
            let applied = match method {
                MergeMethod::Merge => builder.merge(&tip, change).await?,
                MergeMethod::Squash => builder.squash(&tip, change).await?,
                MergeMethod::Rebase => builder.rebase(&tip, change).await?,
            };
            match applied {
                Applied::Commit(commit) => tip = commit,
                Applied::Conflict(files) => {
                    return Ok(CandidateBuild::Conflict {
                        change: index,
                        files,
                    })
                }
            }
        }
        let candidate_ref = format!("{CANDIDATE_REFS}{}", tip.as_str());
        builder
            .git(&["update-ref", &candidate_ref, tip.as_str()], "update-ref")
            .await?;
        let tree = builder.tree_of(&tip).await?;
        Ok(CandidateBuild::Built { commit: tip, tree })
    }

    /// Lets the mirror's gc drop a candidate nobody needs any more (landed or abandoned).
    /// Forgetting one that is not kept is not an error.
    pub async fn forget_candidate(
        &self,
        repo: &RepoName,
        commit: &CommitSha,
    ) -> Result<(), GitError> {
        let lock = self.lock(repo);
        let _guard = lock.lock().await;
        let _across_processes = self.process_lock(repo).await?;
        let candidate_ref = format!("{CANDIDATE_REFS}{}", commit.as_str());
        git(&self.mirror(repo), &["update-ref", "-d", &candidate_ref])
            .await?
            .stdout_if_success("update-ref")?;
        Ok(())
    }

    /// Moves `branch` on the repo's remote to `commit`, only if it still is at `expected`
    /// (`--force-with-lease` with the explicit old value) and only forward: `commit` must
    /// contain `expected`. Safe to repeat: a branch already at `commit` is
    /// [`PushOutcome::AlreadyThere`]; a branch anywhere else is [`PushOutcome::Moved`].
    /// Network failures are errors, to be retried.
    pub async fn push_target(
        &self,
        repo: &RepoSettings,
        branch: &BranchName,
        expected: &CommitSha,
        commit: &CommitSha,
    ) -> Result<PushOutcome, GitError> {
        if !self.is_ancestor(&repo.name, expected, commit).await? {
            return Err(GitError::NotFastForward {
                branch: branch.as_str().to_string(),
                expected: expected.short().to_string(),
                commit: commit.short().to_string(),
            });
        }
        let target = format!("refs/heads/{}", branch.as_str());
        let lease = format!("--force-with-lease={target}:{}", expected.as_str());
        let refspec = format!("{}:{target}", commit.as_str());
        let mut args = vec!["push", "--porcelain", &lease];
        // A repository on this machine may be a working copy with the target checked out
        // (the bundled demo repo, a team's shared folder): its receiving side then moves the
        // branch and updates the (clean) working tree, instead of refusing the push.
        if is_local(&repo.url) {
            args.push(LOCAL_RECEIVE_PACK);
        }
        args.extend(["--", &repo.url, &refspec]);
        let pushed = run_remote_finished(&self.mirror(&repo.name), repo, &args, "push").await?;
        let Some((flag, summary)) = porcelain_status(&pushed.stdout, &target) else {
            // No verdict on the ref: git never got to it (unreachable remote, bad auth).
            return Err(pushed.failure("push"));
        };
        match flag {
            b' ' | b'+' | b'*' if pushed.status.success() => Ok(PushOutcome::Pushed),
            b'=' => Ok(PushOutcome::AlreadyThere),
            b'!' => {
                // Refused: learn why from where the branch is now, not from git's wording.
                let now = self.remote_head(repo, branch).await?;
                if now.as_ref() == Some(commit) {
                    Ok(PushOutcome::AlreadyThere)
                } else if now.as_ref() != Some(expected) {
                    Ok(PushOutcome::Moved { now })
                } else {
                    // Still at `expected`: the remote itself said no (a hook, a protection).
                    Err(GitError::PushRejected {
                        branch: branch.as_str().to_string(),
                        reason: summary,
                    })
                }
            }
            _ => Err(pushed.failure("push")),
        }
    }

    /// The commit `branch` points to on the repo's remote, `None` when it does not exist.
    pub async fn remote_head(
        &self,
        repo: &RepoSettings,
        branch: &BranchName,
    ) -> Result<Option<CommitSha>, GitError> {
        let target = format!("refs/heads/{}", branch.as_str());
        let listed = self
            .ls_remote(repo, &["--refs", "--", &repo.url, &target])
            .await?;
        // The pattern also matches refs that merely end in it; only the exact ref counts.
        String::from_utf8_lossy(&listed)
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(_, name)| *name == target)
            .map(|(id, _)| {
                CommitSha::parse(id).map_err(|e| GitError::Failed {
                    action: "ls-remote".into(),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    /// Every branch on the repo's remote (one `ls-remote` however many there are): what
    /// tells the reconciler that an env's branch was deleted.
    pub async fn remote_branches(
        &self,
        repo: &RepoSettings,
    ) -> Result<std::collections::HashSet<String>, GitError> {
        let listed = self
            .ls_remote(repo, &["--heads", "--refs", "--", &repo.url])
            .await?;
        Ok(String::from_utf8_lossy(&listed)
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter_map(|(_, name)| name.strip_prefix("refs/heads/"))
            .map(str::to_string)
            .collect())
    }

    /// `git ls-remote <args>`, run in the repo's mirror (or the mirrors' folder before the
    /// first fetch made one): its output.
    async fn ls_remote(&self, repo: &RepoSettings, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let mirror = self.mirror(&repo.name);
        let dir = if mirror.join("HEAD").exists() {
            mirror
        } else {
            tokio::fs::create_dir_all(&self.root)
                .await
                .map_err(|e| GitError::Failed {
                    action: "ls-remote".into(),
                    detail: e.to_string(),
                })?;
            self.root.clone()
        };
        let mut all = vec!["ls-remote"];
        all.extend_from_slice(args);
        run_remote_finished(&dir, repo, &all, "ls-remote")
            .await?
            .stdout_if_success("ls-remote")
    }

    /// Whether `of` contains `ancestor` (a commit contains itself).
    pub async fn is_ancestor(
        &self,
        repo: &RepoName,
        ancestor: &CommitSha,
        of: &CommitSha,
    ) -> Result<bool, GitError> {
        self.require_commits(repo, &[ancestor, of]).await?;
        let checked = git(
            &self.mirror(repo),
            &[
                "merge-base",
                "--is-ancestor",
                ancestor.as_str(),
                of.as_str(),
            ],
        )
        .await?;
        match checked.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(checked.failure("merge-base")),
        }
    }

    /// The paths that differ between two commits (a rename is its old and new path).
    pub async fn changed_files(
        &self,
        repo: &RepoName,
        from: &CommitSha,
        to: &CommitSha,
    ) -> Result<Vec<String>, GitError> {
        self.require_commits(repo, &[from, to]).await?;
        let listed = git(
            &self.mirror(repo),
            &[
                "diff-tree",
                "-r",
                "-z",
                "--name-only",
                "--no-renames",
                from.as_str(),
                to.as_str(),
            ],
        )
        .await?
        .stdout_if_success("diff-tree")?;
        Ok(nul_separated(&listed))
    }

    /// Errors naming the first of `commits` the mirror does not hold.
    // A slice, not an iterator: an iterator of borrowing closures held across the awaits
    // would make the callers' futures Send for one lifetime only.
    async fn require_commits(
        &self,
        repo: &RepoName,
        commits: &[&CommitSha],
    ) -> Result<(), GitError> {
        for commit in commits {
            if !self.has_commit(repo, commit).await {
                return Err(GitError::NotInMirror {
                    commit: commit.as_str().to_string(),
                    repo: repo.as_str().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The author or committer of a commit, as git's environment variables take them.
#[derive(Debug, Clone)]
struct Person {
    name: String,
    email: String,
    /// A date git parses; for replayed commits, the original author date as written.
    date: String,
}

enum Applied {
    Commit(CommitSha),
    Conflict(Vec<String>),
}

enum Merged {
    Clean { tree: String },
    Conflict(Vec<String>),
}

/// Writes one candidate's objects into a mirror (the caller holds its locks).
struct Builder<'a> {
    mirror: &'a Path,
    committer: Person,
}

impl Builder<'_> {
    async fn merge(&self, tip: &CommitSha, change: &ChangeToMerge) -> Result<Applied, GitError> {
        match self.merge_trees(None, tip, &change.head).await? {
            Merged::Conflict(files) => Ok(Applied::Conflict(files)),
            Merged::Clean { tree } => {
                let message = format!("Merge {}\n", change.title);
                let commit = self
                    .commit(&tree, &[tip, &change.head], message.as_bytes(), None)
                    .await?;
                Ok(Applied::Commit(commit))
            }
        }
    }

    async fn squash(&self, tip: &CommitSha, change: &ChangeToMerge) -> Result<Applied, GitError> {
        match self.merge_trees(None, tip, &change.head).await? {
            Merged::Conflict(files) => Ok(Applied::Conflict(files)),
            Merged::Clean { tree } => {
                let message = format!("{}\n", change.title);
                let commit = self.commit(&tree, &[tip], message.as_bytes(), None).await?;
                Ok(Applied::Commit(commit))
            }
        }
    }

    async fn rebase(&self, tip: &CommitSha, change: &ChangeToMerge) -> Result<Applied, GitError> {
        let fork_point = self.merge_base(tip, &change.head).await?;
        let listed = self
            .git(
                &[
                    "rev-list",
                    "--first-parent",
                    "--parents",
                    "--reverse",
                    change.head.as_str(),
                    &format!("^{}", fork_point.as_str()),
                ],
                "rev-list",
            )
            .await?;
        let mut tip = tip.clone();
        for line in String::from_utf8_lossy(&listed).lines() {
            let mut ids = line.split(' ').map(parse_sha("rev-list"));
            let (Some(original), Some(parent)) = (ids.next().transpose()?, ids.next().transpose()?)
            else {
                return Err(GitError::Failed {
                    action: "rebase".into(),
                    detail: format!("cannot replay a root commit ({line})"),
                });
            };
            let tree = match self.merge_trees(Some(&parent), &tip, &original).await? {
                Merged::Conflict(files) => return Ok(Applied::Conflict(files)),
                Merged::Clean { tree } => tree,
            };
            let tip_tree = self.tree_of(&tip).await?;
            if tree == tip_tree && self.tree_of(&original).await? != self.tree_of(&parent).await? {
                continue; // its changes are already in; an empty copy would only be noise
            }
            let (author, message) = self.author_and_message(&original).await?;
            tip = self.commit(&tree, &[&tip], &message, Some(&author)).await?;
        }
        Ok(Applied::Commit(tip))
    }

    /// The three-way merge of `ours` and `theirs` (from their merge base, or from
    /// `merge_base` when given, as a cherry-pick does), written as a tree in the mirror.
    async fn merge_trees(
        &self,
        merge_base: Option<&CommitSha>,
        ours: &CommitSha,
        theirs: &CommitSha,
    ) -> Result<Merged, GitError> {
        let base_arg = merge_base.map(|b| format!("--merge-base={}", b.as_str()));
        let mut args = vec![
            "merge-tree",
            "--write-tree",
            "-z",
            "--name-only",
            "--no-messages",
        ];
        args.extend(base_arg.as_deref());
        args.extend([ours.as_str(), theirs.as_str()]);
        let merged = git(self.mirror, &args).await?;
        // With -z, --name-only and --no-messages: the tree id, then each conflicted path,
        // every one NUL-terminated. Exit 1 means conflicts; anything else but 0 an error.
        let mut fields = nul_separated(&merged.stdout).into_iter();
        match (merged.status.code(), fields.next()) {
            (Some(0), Some(tree)) => Ok(Merged::Clean { tree }),
            (Some(1), Some(_)) => {
                let mut files: Vec<String> = fields.collect();
                files.dedup(); // one entry per path, even with several conflict stages
                Ok(Merged::Conflict(files))
            }
            _ => Err(merged.failure("merge-tree")),
        }
    }

    /// Writes a commit of `tree` with `parents`; the author is the committer unless given.
    async fn commit(
        &self,
        tree: &str,
        parents: &[&CommitSha],
        message: &[u8],
        author: Option<&Person>,
    ) -> Result<CommitSha, GitError> {
        let mut args = vec!["commit-tree", "--no-gpg-sign", tree];
        for parent in parents {
            args.extend(["-p", parent.as_str()]);
        }
        let author = author.unwrap_or(&self.committer);
        let env = [
            ("GIT_AUTHOR_NAME", author.name.as_str()),
            ("GIT_AUTHOR_EMAIL", author.email.as_str()),
            ("GIT_AUTHOR_DATE", author.date.as_str()),
            ("GIT_COMMITTER_NAME", self.committer.name.as_str()),
            ("GIT_COMMITTER_EMAIL", self.committer.email.as_str()),
            ("GIT_COMMITTER_DATE", self.committer.date.as_str()),
        ];
        let mut command = command(self.mirror, &args);
        command.envs(env);
        // The message goes in on stdin, byte for byte (commit-tree does no clean-up).
        let out = finish(command, Some(message), "commit-tree", None)
            .await?
            .stdout_if_success("commit-tree")?;
        parse_sha("commit-tree")(String::from_utf8_lossy(&out).trim())
    }

    async fn merge_base(&self, a: &CommitSha, b: &CommitSha) -> Result<CommitSha, GitError> {
        let found = git(self.mirror, &["merge-base", a.as_str(), b.as_str()]).await?;
        match found.status.code() {
            Some(0) => parse_sha("merge-base")(String::from_utf8_lossy(&found.stdout).trim()),
            Some(1) => Err(GitError::Failed {
                action: "rebase".into(),
                detail: format!("{} has no history in common with {}", b.short(), a.short()),
            }),
            _ => Err(found.failure("merge-base")),
        }
    }

    async fn tree_of(&self, commit: &CommitSha) -> Result<String, GitError> {
        let spec = format!("{}^{{tree}}", commit.as_str());
        let out = self
            .git(&["rev-parse", "--verify", "--quiet", &spec], "rev-parse")
            .await?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// A commit's author (name, email, date as written) and raw message, read from the
    /// commit object itself rather than from formatted, re-encoded log output.
    async fn author_and_message(&self, commit: &CommitSha) -> Result<(Person, Vec<u8>), GitError> {
        let raw = self
            .git(&["cat-file", "commit", commit.as_str()], "cat-file")
            .await?;
        let malformed = || GitError::Failed {
            action: "cat-file".into(),
            detail: format!("commit {} has no readable author", commit.short()),
        };
        let split = raw
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(malformed)?;
        let (headers, message) = (&raw[..split], &raw[split + 2..]);
        let author_line = headers
            .split(|&b| b == b'\n')
            .find_map(|line| line.strip_prefix(b"author "))
            .ok_or_else(malformed)?;
        let author = parse_person(&String::from_utf8_lossy(author_line)).ok_or_else(malformed)?;
        Ok((author, message.to_vec()))
    }

    async fn git(&self, args: &[&str], action: &str) -> Result<Vec<u8>, GitError> {
        git(self.mirror, args).await?.stdout_if_success(action)
    }
}

/// `Name <email> 1700000000 +0100` (an author or committer header) as a [`Person`].
fn parse_person(header: &str) -> Option<Person> {
    let (identity, date) = header.rsplit_once("> ")?;
    let (name, email) = identity.split_once(" <").or_else(|| {
        // An empty name is written as `<email>`.
        identity.strip_prefix('<').map(|email| ("", email))
    })?;
    let (seconds, zone) = date.split_once(' ')?;
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Person {
        name: name.to_string(),
        email: email.to_string(),
        date: format!("@{seconds} {zone}"),
    })
}

/// The flag and summary `git push --porcelain` printed for `target`
/// (`<flag>\t<from>:<to>\t<summary>`).
fn porcelain_status(stdout: &[u8], target: &str) -> Option<(u8, String)> {
    String::from_utf8_lossy(stdout).lines().find_map(|line| {
        let mut fields = line.splitn(3, '\t');
        let flag = *fields.next()?.as_bytes().first()?;
        let (_, to) = fields.next()?.split_once(':')?;
        (to == target).then(|| (flag, fields.next().unwrap_or_default().to_string()))
    })
}

fn nul_separated(out: &[u8]) -> Vec<String> {
    out.split(|&b| b == 0)
        .filter(|field| !field.is_empty())
        .map(|field| String::from_utf8_lossy(field).into_owned())
        .collect()
}

fn parse_sha(action: &'static str) -> impl Fn(&str) -> Result<CommitSha, GitError> {
    move |id| {
        CommitSha::parse(id).map_err(|e| GitError::Failed {
            action: action.into(),
            detail: e.to_string(),
        })
    }
}

/// A git command for candidate work: C locale, so nothing it prints depends on the host.
fn command(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = git_command(dir, args, None);
    command.env("LC_ALL", "C");
    command
}

/// Runs [`command`]; how it ended, for the caller to read the exit status.
async fn git(dir: &Path, args: &[&str]) -> Result<Finished, GitError> {
    let action = args.first().copied().unwrap_or("git");
    finish(command(dir, args), None, action, None).await
}

/// `receive-pack` for a repository on this machine (a fixed command; git quotes the path): a
/// branch checked out in a working copy is moved and its clean working tree updated.
const LOCAL_RECEIVE_PACK: &str =
    "--receive-pack=git -c receive.denyCurrentBranch=updateInstead receive-pack";

/// A path or `file://` URL: the receiving side runs on this machine.
fn is_local(url: &str) -> bool {
    url.starts_with("file://") || !url.contains("://") && !url.contains('@')
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    /// A working repository where people commit, the bare `origin.git` they push to (the
    /// repo's remote), and Slipway's mirrors fetching from it.
    struct World {
        _dir: tempfile::TempDir,
        work: PathBuf,
        origin: PathBuf,
        mirrors: GitMirrors,
        repo: RepoSettings,
    }

    fn identity() -> CommitIdentity {
        CommitIdentity {
            name: "Slipway".into(),
            email: "slipway@localhost".into(),
            time: 1_700_000_000,
        }
    }

    /// Runs git in `dir` as a person would (a fixed author), returning its stdout.
    fn git_at(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Ernie")
            .env("GIT_AUTHOR_EMAIL", "ernie@example.com")
            .env("GIT_AUTHOR_DATE", "@1600000000 +0200")
            .env("GIT_COMMITTER_NAME", "Ernie")
            .env("GIT_COMMITTER_EMAIL", "ernie@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn sha(id: &str) -> CommitSha {
        CommitSha::parse(id).unwrap()
    }

    impl World {
        /// `main` holds files `a`..`e`, one line per number 1..=5 each.
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let work = dir.path().join("work");
            let origin = dir.path().join("origin.git");
            std::fs::create_dir_all(&work).unwrap();
            git_at(dir.path(), &["init", "-q", "--bare", "origin.git"]);
            git_at(&work, &["init", "-q", "--initial-branch=main"]);
            git_at(
                &work,
                &["remote", "add", "origin", origin.to_str().unwrap()],
            );
            let world = Self {
                mirrors: GitMirrors::new(&dir.path().join("data")),
                repo: RepoSettings {
                    channels: Vec::new(),
                    name: RepoName::parse("shop").unwrap(),
                    url: origin.display().to_string(),
                    env_file: "compose.yml".into(),
                    default_ttl: Duration::from_secs(60),
                    test_timeout: Duration::from_secs(60),
                    secret_env: vec![],
                    credentials: None,
                    queue: Default::default(),
                    idle: Default::default(),
                    max_envs: None,
                },
                _dir: dir,
                work,
                origin,
            };
            let lines = "1\n2\n3\n4\n5\n";
            let files: Vec<(&str, &str)> = ["a", "b", "c", "d", "e"].map(|f| (f, lines)).to_vec();
            world.commit_checked_out("main", &files, "base");
            world
        }

        /// Commits `files` on `branch` (created from `from`) and pushes it to origin.
        fn commit(
            &self,
            from: &str,
            branch: &str,
            files: &[(&str, &str)],
            message: &str,
        ) -> CommitSha {
            git_at(&self.work, &["checkout", "-q", "-B", branch, from]);
            self.commit_checked_out(branch, files, message)
        }

        fn commit_checked_out(
            &self,
            branch: &str,
            files: &[(&str, &str)],
            message: &str,
        ) -> CommitSha {
            for (path, contents) in files {
                std::fs::write(self.work.join(path), contents).unwrap();
            }
            git_at(&self.work, &["add", "-A"]);
            git_at(&self.work, &["commit", "-q", "-m", message]);
            git_at(&self.work, &["push", "-q", "-f", "origin", branch]);
            sha(&git_at(&self.work, &["rev-parse", "HEAD"]))
        }

        async fn fetch(&self, branch: &str) -> CommitSha {
            self.mirrors
                .fetch_branch(&self.repo, &BranchName::parse(branch).unwrap())
                .await
                .unwrap()
        }

        fn mirror(&self) -> PathBuf {
            self.mirrors.mirror(&self.repo.name)
        }

        /// Git in the mirror.
        fn in_mirror(&self, args: &[&str]) -> String {
            git_at(&self.mirror(), args)
        }

        fn file_at(&self, commit: &CommitSha, path: &str) -> String {
            self.in_mirror(&["cat-file", "blob", &format!("{}:{path}", commit.as_str())])
        }

        fn parents(&self, commit: &CommitSha) -> Vec<CommitSha> {
            self.in_mirror(&["rev-list", "--no-walk", "--parents", commit.as_str()])
                .split(' ')
                .skip(1)
                .map(sha)
                .collect()
        }

        async fn build(
            &self,
            base: &CommitSha,
            heads: &[&CommitSha],
            method: MergeMethod,
        ) -> CandidateBuild {
            let changes: Vec<ChangeToMerge> = heads
                .iter()
                .enumerate()
                .map(|(i, head)| ChangeToMerge {
                    head: (*head).clone(),
                    title: format!("shop#{}: change {i} (@ernie)", 40 + i),
                })
                .collect();
            self.mirrors
                .build_candidate_as(&self.repo.name, base, &changes, method, &identity())
                .await
                .unwrap()
        }
    }

    fn built(build: CandidateBuild) -> (CommitSha, String) {
        match build {
            CandidateBuild::Built { commit, tree } => (commit, tree),
            other => panic!("expected a built candidate, got {other:?}"),
        }
    }

    /// Two changes touching different lines of `a`, and files of their own.
    async fn two_clean_changes(world: &World) -> (CommitSha, CommitSha, CommitSha) {
        let one = world.commit(
            "main",
            "one",
            &[("a", "ONE\n2\n3\n4\n5\n"), ("f", "f\n")],
            "one",
        );
        let two = world.commit(
            "main",
            "two",
            &[("a", "1\n2\n3\n4\nTWO\n"), ("g", "g\n")],
            "two",
        );
        let base = world.fetch("main").await;
        assert_eq!(world.fetch("one").await, one);
        assert_eq!(world.fetch("two").await, two);
        (base, one, two)
    }

    #[tokio::test]
    async fn git_merge_candidate_holds_both_changes_in_order_as_merge_commits() {
        let world = World::new();
        let (base, one, two) = two_clean_changes(&world).await;
        let (commit, tree) = built(world.build(&base, &[&one, &two], MergeMethod::Merge).await);

        assert_eq!(world.file_at(&commit, "a"), "ONE\n2\n3\n4\nTWO");
        assert_eq!(world.file_at(&commit, "f"), "f");
        assert_eq!(world.file_at(&commit, "g"), "g");
        assert_eq!(
            tree,
            world.in_mirror(&["rev-parse", &format!("{commit}^{{tree}}")])
        );
        let parents = world.parents(&commit);
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[1], two);
        assert_eq!(world.parents(&parents[0]), vec![base.clone(), one.clone()]);
        assert_eq!(
            world.in_mirror(&["log", "-1", "--format=%s|%an <%ae>|%cn <%ce>|%ct", commit.as_str()]),
            "Merge shop#41: change 1 (@ernie)|Slipway <slipway@localhost>|Slipway <slipway@localhost>|1700000000"
        );
        for head in [&one, &two, &base] {
            assert!(world
                .mirrors
                .is_ancestor(&world.repo.name, head, &commit)
                .await
                .unwrap());
        }
        assert!(!world
            .mirrors
            .is_ancestor(&world.repo.name, &commit, &one)
            .await
            .unwrap());
        let mut changed = world
            .mirrors
            .changed_files(&world.repo.name, &base, &commit)
            .await
            .unwrap();
        changed.sort();
        assert_eq!(changed, ["a", "f", "g"]);
    }

    #[tokio::test]
    async fn git_candidates_are_reproducible_and_survive_gc_until_forgotten() {
        let world = World::new();
        let (base, one, two) = two_clean_changes(&world).await;
        let (first, _) = built(world.build(&base, &[&one, &two], MergeMethod::Merge).await);
        let (again, _) = built(world.build(&base, &[&one, &two], MergeMethod::Merge).await);
        assert_eq!(first, again, "same inputs, identity and time: same commit");

        // Only the candidate ref holds the merge commits (the heads are fetched refs).
        world.in_mirror(&["gc", "--quiet", "--prune=now"]);
        assert!(world.mirrors.has_commit(&world.repo.name, &first).await);
        world
            .mirrors
            .forget_candidate(&world.repo.name, &first)
            .await
            .unwrap();
        world
            .mirrors
            .forget_candidate(&world.repo.name, &first)
            .await
            .unwrap();
        world.in_mirror(&["reflog", "expire", "--expire=now", "--all"]);
        world.in_mirror(&["gc", "--quiet", "--prune=now"]);
        assert!(!world.mirrors.has_commit(&world.repo.name, &first).await);
    }

    #[tokio::test]
    async fn git_squash_candidate_has_one_parent_per_change_and_no_head_in_its_history() {
        let world = World::new();
        let (base, one, two) = two_clean_changes(&world).await;
        let (commit, _) = built(world.build(&base, &[&one, &two], MergeMethod::Squash).await);
        assert_eq!(world.file_at(&commit, "a"), "ONE\n2\n3\n4\nTWO");
        let parents = world.parents(&commit);
        assert_eq!(parents.len(), 1);
        assert_eq!(world.parents(&parents[0]), vec![base.clone()]);
        assert_eq!(
            world.in_mirror(&["log", "--format=%s", commit.as_str(), &format!("^{base}")]),
            "shop#41: change 1 (@ernie)\nshop#40: change 0 (@ernie)"
        );
        for head in [&one, &two] {
            assert!(!world
                .mirrors
                .is_ancestor(&world.repo.name, head, &commit)
                .await
                .unwrap());
        }
    }

    #[tokio::test]
    async fn git_rebase_candidate_replays_each_commit_with_its_author_and_message() {
        let world = World::new();
        world.commit("main", "one", &[("a", "ONE\n2\n3\n4\n5\n")], "one: first");
        world.commit(
            "one",
            "one",
            &[("b", "1\nONE\n3\n4\n5\n")],
            "one: second\n\nwith a body",
        );
        let one = world.commit("one", "one", &[("f", "f\n")], "one: third");
        world.commit("main", "two", &[("a", "1\n2\n3\n4\nTWO\n")], "two: first");
        let two = world.commit("two", "two", &[("g", "g\n")], "two: second");
        // main moves on after both forked: the replays go on top of its new head.
        let base = world.commit("main", "main", &[("e", "1\n2\nMAIN\n4\n5\n")], "main moves");
        assert_eq!(world.fetch("main").await, base);
        world.fetch("one").await;
        world.fetch("two").await;

        let (commit, _) = built(world.build(&base, &[&one, &two], MergeMethod::Rebase).await);
        let log = world.in_mirror(&[
            "log",
            "--reverse",
            "--format=%x1e%B%x1f%an%x1f%ad%x1f%cn%x1f%P",
            "--date=raw",
            commit.as_str(),
            &format!("^{base}"),
        ]);
        // One record per commit (\x1e), its fields apart (\x1f).
        let replayed: Vec<Vec<&str>> = log
            .split('\x1e')
            .skip(1)
            .map(|record| record.split('\x1f').map(str::trim).collect())
            .collect();
        let messages: Vec<&str> = replayed.iter().map(|fields| fields[0]).collect();
        assert_eq!(
            messages,
            [
                "one: first",
                "one: second\n\nwith a body",
                "one: third",
                "two: first",
                "two: second"
            ]
        );
        for fields in &replayed {
            assert_eq!(
                fields[1..4],
                ["Ernie", "1600000000 +0200", "Slipway"],
                "{fields:?}"
            );
            assert_eq!(
                fields[4].split(' ').count(),
                1,
                "linear history: {fields:?}"
            );
        }
        assert_eq!(world.file_at(&commit, "a"), "ONE\n2\n3\n4\nTWO");
        assert_eq!(world.file_at(&commit, "b"), "1\nONE\n3\n4\n5");
        assert_eq!(world.file_at(&commit, "e"), "1\n2\nMAIN\n4\n5");
        assert!(!world
            .mirrors
            .is_ancestor(&world.repo.name, &one, &commit)
            .await
            .unwrap());
        assert!(world
            .mirrors
            .is_ancestor(&world.repo.name, &base, &commit)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn git_rebase_drops_commits_whose_changes_are_already_in() {
        let world = World::new();
        let one = world.commit("main", "one", &[("a", "ONE\n2\n3\n4\n5\n")], "one");
        // `two` was started on top of `one` and adds one commit of its own.
        let two = world.commit("one", "two", &[("g", "g\n")], "two");
        let base = world.fetch("main").await;
        world.fetch("one").await;
        world.fetch("two").await;
        let (commit, _) = built(world.build(&base, &[&one, &two], MergeMethod::Rebase).await);
        assert_eq!(
            world.in_mirror(&["log", "--format=%s", commit.as_str(), &format!("^{base}")]),
            "two\none"
        );
    }

    #[tokio::test]
    async fn git_conflicts_name_the_change_and_exactly_its_conflicting_files() {
        let world = World::new();
        let one = world.commit(
            "main",
            "one",
            &[("a", "ONE\n2\n3\n4\n5\n"), ("b", "ONE\n2\n3\n4\n5\n")],
            "one",
        );
        let clean = world.commit("main", "clean", &[("f", "f\n")], "clean");
        // Clashes with `one` on a and b; its change to c and its new file merge cleanly.
        world.commit(
            "main",
            "two",
            &[("c", "1\n2\n3\n4\nTWO\n"), ("g", "g\n")],
            "two: clean part",
        );
        let two = world.commit(
            "two",
            "two",
            &[("a", "TWO\n2\n3\n4\n5\n"), ("b", "TWO\n2\n3\n4\n5\n")],
            "two: clashing part",
        );
        let base = world.fetch("main").await;
        for branch in ["one", "clean", "two"] {
            world.fetch(branch).await;
        }
        for method in [MergeMethod::Merge, MergeMethod::Squash, MergeMethod::Rebase] {
            assert_eq!(
                world.build(&base, &[&one, &clean, &two], method).await,
                CandidateBuild::Conflict {
                    change: 2,
                    files: vec!["a".into(), "b".into()]
                },
                "{method}"
            );
            // Each applies on its own.
            built(world.build(&base, &[&two], method).await);
        }
    }

    #[tokio::test]
    async fn git_candidates_need_every_commit_in_the_mirror_first() {
        let world = World::new();
        let base = world.fetch("main").await;
        let unfetched = world.commit("main", "later", &[("f", "f\n")], "not fetched");
        let changes = [ChangeToMerge {
            head: unfetched.clone(),
            title: "later".into(),
        }];
        let error = world
            .mirrors
            .build_candidate(&world.repo.name, &base, &changes, MergeMethod::Merge)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, GitError::NotInMirror { commit, .. } if commit == unfetched.as_str()),
            "{error}"
        );
        assert!(error.to_string().contains(unfetched.as_str()), "{error}");
    }

    async fn cas_push_against(url: &str) {
        let mut world = World::new();
        world.repo.url = url.replace("{origin}", world.origin.to_str().unwrap());
        let main = BranchName::parse("main").unwrap();
        let (base, one, two) = two_clean_changes(&world).await;
        let remote = || world.mirrors.remote_head(&world.repo, &main);
        assert_eq!(remote().await.unwrap(), Some(base.clone()));

        let (first, _) = built(world.build(&base, &[&one], MergeMethod::Merge).await);
        let push = |expected: CommitSha, commit: CommitSha| {
            let (mirrors, repo, main) = (world.mirrors.clone(), world.repo.clone(), main.clone());
            async move { mirrors.push_target(&repo, &main, &expected, &commit).await }
        };
        assert_eq!(
            push(base.clone(), first.clone()).await.unwrap(),
            PushOutcome::Pushed
        );
        assert_eq!(remote().await.unwrap(), Some(first.clone()));
        // Repeated, as after a crash between the push and recording it.
        assert_eq!(
            push(base.clone(), first.clone()).await.unwrap(),
            PushOutcome::AlreadyThere
        );

        // Someone pushes to main; a candidate built on the old value must not land.
        git_at(&world.work, &["fetch", "-q", "origin"]);
        let theirs = world.commit("origin/main", "main", &[("h", "h\n")], "pushed by hand");
        let (stale, _) = built(world.build(&first, &[&two], MergeMethod::Merge).await);
        assert_eq!(
            push(first.clone(), stale.clone()).await.unwrap(),
            PushOutcome::Moved {
                now: Some(theirs.clone())
            }
        );
        assert_eq!(remote().await.unwrap(), Some(theirs.clone()));

        // Rebuilt on the new value, it lands.
        assert_eq!(world.fetch("main").await, theirs);
        let (rebuilt, _) = built(world.build(&theirs, &[&two], MergeMethod::Merge).await);
        assert_eq!(
            push(theirs.clone(), rebuilt.clone()).await.unwrap(),
            PushOutcome::Pushed
        );
        assert_eq!(remote().await.unwrap(), Some(rebuilt.clone()));

        // Never backwards, even with the right expected value.
        let error = push(rebuilt.clone(), first.clone()).await.unwrap_err();
        assert!(matches!(error, GitError::NotFastForward { .. }), "{error}");
        assert_eq!(remote().await.unwrap(), Some(rebuilt.clone()));

        // A deleted branch is moved too, and is not recreated.
        git_at(&world.work, &["push", "-q", "origin", "--delete", "main"]);
        let (later, _) = built(world.build(&rebuilt, &[&one], MergeMethod::Squash).await);
        assert_eq!(
            push(rebuilt.clone(), later).await.unwrap(),
            PushOutcome::Moved { now: None }
        );
        assert_eq!(remote().await.unwrap(), None);
    }

    #[tokio::test]
    async fn git_push_target_is_a_compare_and_swap_on_a_bare_repo_path() {
        cas_push_against("{origin}").await;
    }

    #[tokio::test]
    async fn git_push_target_is_a_compare_and_swap_on_a_file_url() {
        cas_push_against("file://{origin}").await;
    }

    /// A plain push would take this (the candidate contains the new value); the lease not.
    #[tokio::test]
    async fn git_push_target_refuses_even_a_fast_forward_from_an_unexpected_value() {
        let world = World::new();
        let (base, one, two) = two_clean_changes(&world).await;
        let (candidate, _) = built(world.build(&base, &[&one, &two], MergeMethod::Merge).await);
        let first_merge = world.parents(&candidate)[0].clone();
        let url = world.repo.url.clone();
        world.in_mirror(&[
            "push",
            "-q",
            &url,
            &format!("{first_merge}:refs/heads/main"),
        ]);
        let main = BranchName::parse("main").unwrap();
        assert_eq!(
            world
                .mirrors
                .push_target(&world.repo, &main, &base, &candidate)
                .await
                .unwrap(),
            PushOutcome::Moved {
                now: Some(first_merge.clone())
            }
        );
        assert_eq!(
            world.mirrors.remote_head(&world.repo, &main).await.unwrap(),
            Some(first_merge)
        );
    }

    #[tokio::test]
    async fn git_push_refused_by_the_remote_itself_is_an_error_not_a_move() {
        let world = World::new();
        let (base, one, _) = two_clean_changes(&world).await;
        let hook = world.origin.join("hooks/pre-receive");
        std::fs::write(&hook, "#!/bin/sh\necho 'main is protected' >&2\nexit 1\n").unwrap();
        std::process::Command::new("chmod")
            .args(["+x"])
            .arg(&hook)
            .status()
            .unwrap();
        let (commit, _) = built(world.build(&base, &[&one], MergeMethod::Merge).await);
        let main = BranchName::parse("main").unwrap();
        let error = world
            .mirrors
            .push_target(&world.repo, &main, &base, &commit)
            .await
            .unwrap_err();
        assert!(matches!(error, GitError::PushRejected { .. }), "{error}");
        assert_eq!(
            world.mirrors.remote_head(&world.repo, &main).await.unwrap(),
            Some(base)
        );
    }

    #[tokio::test]
    async fn git_push_to_an_unreachable_remote_is_an_error() {
        let mut world = World::new();
        let (base, one, _) = two_clean_changes(&world).await;
        let (commit, _) = built(world.build(&base, &[&one], MergeMethod::Merge).await);
        world.repo.url = world
            .origin
            .with_file_name("gone.git")
            .display()
            .to_string();
        let main = BranchName::parse("main").unwrap();
        let error = world
            .mirrors
            .push_target(&world.repo, &main, &base, &commit)
            .await
            .unwrap_err();
        assert!(matches!(error, GitError::Failed { .. }), "{error}");
    }

    #[test]
    fn merge_methods_parse_and_print_lowercase() {
        for method in [MergeMethod::Merge, MergeMethod::Squash, MergeMethod::Rebase] {
            assert_eq!(MergeMethod::parse(method.as_str()), Ok(method));
            assert_eq!(
                serde_json::to_string(&method).unwrap(),
                format!("\"{method}\"")
            );
        }
        assert!(MergeMethod::parse("fast-forward").is_err());
        assert!(MergeMethod::parse("Merge").is_err());
    }

    #[test]
    fn author_headers_keep_their_date_and_zone() {
        let person = parse_person("Ernie Q. <ernie@example.com> 1600000000 -0130").unwrap();
        assert_eq!(
            (
                person.name.as_str(),
                person.email.as_str(),
                person.date.as_str()
            ),
            ("Ernie Q.", "ernie@example.com", "@1600000000 -0130")
        );
        assert_eq!(parse_person("<x@y> 1 +0000").unwrap().name, "");
        assert!(parse_person("no date <x@y>").is_none());
    }
}
