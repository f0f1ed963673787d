//! Validated identifiers. Anything that came from a user, a branch or a compose file is
//! checked here once, so the rest of the engine can put these values into paths, labels and
//! process arguments without thinking about tricks like `../` or a leading `-`.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest environment name. Docker object names built from it (`slipway-<env>-<service>`)
/// must stay short enough to read and to fit in DNS labels of published URLs.
pub const MAX_ENV_NAME: usize = 48;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} `{value}` is too long (at most {max} characters)")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error("{kind} `{value}` is not allowed: {why}")]
    Invalid {
        kind: &'static str,
        value: String,
        why: &'static str,
    },
    /// A pull request head asked for as a branch: that would skip the per-head fork approval.
    #[error("`{0}` is a pull request head; PR envs are made by the pull request itself (and a fork's head needs `/slipway approve`)")]
    PullRequestRef(String),
    /// A ref or commit that is not a branch (`refs/tags/...`, a commit id, `@{...}`).
    #[error("`{value}` is not a branch: {why}; name a branch such as `feature-x` or `refs/heads/feature-x`")]
    NotABranch { value: String, why: &'static str },
}

fn printable(value: &str) -> String {
    value.escape_default().to_string()
}

/// A repository name from the config: lowercase letters, digits and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        dns_like("repo name", value, 32)?;
        Ok(Self(value.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An environment name: `<repo>-<branch-slug>`, lowercase DNS-label characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        dns_like("environment name", value, MAX_ENV_NAME)?;
        Ok(Self(value.to_string()))
    }

    /// The name of the env that serves `branch` of `repo`, a function of (repo, branch) that
    /// never takes another branch's or a pull request's name:
    /// - a branch whose slug is the branch itself (`feature-x`) keeps the readable
    ///   `<repo>-<branch>` (`demo-feature-x`);
    /// - a branch whose slug loses something (`feat/a`, `Feat_A`), a name of a PR env's shape
    ///   (`<anything>-pr-<n>`, e.g. branch `pr-4`), a name of a shared env's shape
    ///   (`<anything>-shared`, e.g. branch `shared`) and a name too long to keep get a short
    ///   hash of the branch (`demo-feat-a-3f2a9c`), so `feat/a`, `Feat_A` and `feat-a` are
    ///   three envs.
    ///
    /// What hashing cannot rule out (repo `shop-x` branch `y` against repo `shop` branch `x-y`)
    /// the store refuses: a name that belongs to another (repo, branch or PR) is never moved.
    pub fn for_branch(repo: &RepoName, branch: &BranchName) -> Self {
        let slug = slugify(branch.as_str());
        let full = format!("{}-{}", repo.as_str(), slug);
        let lossy = slug != branch.as_str();
        if full.len() <= MAX_ENV_NAME
            && !lossy
            && !looks_like_pull_request(&full)
            && !looks_like_shared(&full)
        {
            return Self(full);
        }
        Self::for_branch_hashed(repo, branch)
    }

    /// The hashed form of [`EnvName::for_branch`] (`demo-staging-3f2a9c`), for a branch
    /// whose readable name is taken by something else (a release channel's env).
    pub fn for_branch_hashed(repo: &RepoName, branch: &BranchName) -> Self {
        let full = format!("{}-{}", repo.as_str(), slugify(branch.as_str()));
        let mut hash = hex::encode(&Sha256::digest(branch.as_str().as_bytes())[..3]);
        if hash.bytes().all(|b| b.is_ascii_digit()) {
            // An all-digit suffix after a slug ending in `pr` would read as a PR env's name.
            hash.replace_range(..1, "h");
        }
        let keep = (MAX_ENV_NAME - hash.len() - 1).min(full.len());
        let cut = full[..keep].trim_end_matches('-');
        Self(format!("{cut}-{hash}"))
    }

    /// The name of the env that serves pull request `number` of `repo`.
    pub fn for_pull_request(repo: &RepoName, number: PrNumber) -> Self {
        Self(format!("{}-pr-{number}", repo.as_str()))
    }

    /// The env that runs `repo`'s shared services (compose `x-slipway.shared`), once for
    /// every env of the repo: `<repo>-shared`. No branch or PR env is ever given this name.
    pub fn for_shared(repo: &RepoName) -> Self {
        Self(format!("{}{SHARED_SUFFIX}", repo.as_str()))
    }

    /// The long-lived env that serves release channel `channel` of `repo`:
    /// `<repo>-<channel>`. A branch env that would take this name gets another (see
    /// `Engine::up`).
    pub fn for_release(repo: &RepoName, channel: &str) -> Self {
        Self(format!("{}-{channel}", repo.as_str()))
    }

    /// The env that runs the canary copies of a rollout in `channel`: `<repo>-<channel>-canary`.
    pub fn for_canary(repo: &RepoName, channel: &str) -> Self {
        Self(format!("{}-{channel}{CANARY_SUFFIX}", repo.as_str()))
    }

    /// Whether this is the shared env of `repo`.
    pub fn is_shared_of(&self, repo: &RepoName) -> bool {
        self.0
            .strip_suffix(SHARED_SUFFIX)
            .is_some_and(|name| name == repo.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What ends the name of a rollout's canary env.
const CANARY_SUFFIX: &str = "-canary";

/// What ends the name of a repo's shared env.
const SHARED_SUFFIX: &str = "-shared";

/// `<anything>-shared`: the shape of a shared env's name (repo `shop-x`'s is `shop-x-shared`,
/// so branch `x-shared` of repo `shop` must not take it either).
fn looks_like_shared(name: &str) -> bool {
    name.ends_with(SHARED_SUFFIX)
}

/// A git branch name, checked against git's ref rules and a conservative character set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BranchName(String);

impl BranchName {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const KIND: &str = "branch name";
        let invalid = |why| NameError::Invalid {
            kind: KIND,
            value: printable(value),
            why,
        };
        if value.is_empty() {
            return Err(NameError::Empty { kind: KIND });
        }
        if value.len() > 200 {
            return Err(NameError::TooLong {
                kind: KIND,
                value: printable(value),
                max: 200,
            });
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/+".contains(&b))
        {
            return Err(invalid("use only letters, digits and . _ - / +"));
        }
        if value.starts_with('-') || value.starts_with('/') || value.starts_with('.') {
            return Err(invalid("it must not start with `-`, `/` or `.`"));
        }
        if value.ends_with('/') || value.ends_with('.') || value.ends_with(".lock") {
            return Err(invalid("it must not end with `/`, `.` or `.lock`"));
        }
        if value.contains("..") || value.contains("//") || value.contains("/.") {
            return Err(invalid("it must not contain `..`, `//` or `/.`"));
        }
        if value == "HEAD" {
            return Err(invalid("name a branch, not HEAD"));
        }
        Ok(Self(value.to_string()))
    }

    /// A branch as a person names it: `feature-x` or `refs/heads/feature-x` (the same
    /// branch). Any other ref (`refs/pull/...`, `refs/tags/...`, `refs/remotes/...`), a
    /// commit id, `HEAD` or `@{...}` is refused: a branch env fetches exactly
    /// `refs/heads/<branch>`, and a pull request head only ever comes in through the pull
    /// request path with its per-head fork approval.
    pub fn from_user(value: &str) -> Result<Self, NameError> {
        let value = value.trim();
        let not_a_branch = |why| NameError::NotABranch {
            value: printable(value),
            why,
        };
        let name = match value.strip_prefix("refs/heads/") {
            Some(rest) => rest,
            None if value.starts_with("refs/pull/")
                || value.starts_with("refs/merge-requests/") =>
            {
                return Err(NameError::PullRequestRef(printable(value)));
            }
            None if value.starts_with("refs/") || value == "refs" => {
                return Err(not_a_branch(
                    "only branches (`refs/heads/...`) can be deployed as a branch env",
                ));
            }
            None => value,
        };
        if name.starts_with("refs/") {
            return Err(not_a_branch("a branch named `refs/...` is ambiguous"));
        }
        if name.contains("@{")
            || name == "@"
            || name.ends_with("HEAD") && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            return Err(not_a_branch("name a branch, not a revision"));
        }
        if (name.len() == 40 || name.len() == 64) && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_a_branch("that is a commit id"));
        }
        Self::parse(name)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A full 40-hex git commit id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitSha(String);

impl CommitSha {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let value = value.trim();
        if value.len() != 40 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NameError::Invalid {
                kind: "commit",
                value: printable(value),
                why: "expected 40 hexadecimal digits",
            });
        }
        Ok(Self(value.to_ascii_lowercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

/// A pull request number. GitHub's are positive 32-bit integers (`1..=2^31-1`), and the store
/// keeps them as such: anything else is refused here, so no later conversion can wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct PrNumber(u32);

impl PrNumber {
    /// The largest number accepted.
    pub const MAX: u64 = i32::MAX as u64;

    pub fn new(number: u64) -> Result<Self, NameError> {
        match u32::try_from(number) {
            Ok(n) if (1..=Self::MAX).contains(&number) => Ok(Self(n)),
            _ => Err(NameError::Invalid {
                kind: "pull request number",
                value: number.to_string(),
                why: "expected 1 to 2147483647",
            }),
        }
    }

    /// A number as the store keeps it.
    pub fn from_i64(number: i64) -> Result<Self, NameError> {
        u64::try_from(number)
            .map_err(|_| NameError::Invalid {
                kind: "pull request number",
                value: number.to_string(),
                why: "expected 1 to 2147483647",
            })
            .and_then(Self::new)
    }

    pub fn get(self) -> u64 {
        u64::from(self.0)
    }

    /// The number as the store keeps it.
    pub fn as_i64(self) -> i64 {
        i64::from(self.0)
    }
}

impl fmt::Display for PrNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u64> for PrNumber {
    type Error = NameError;
    fn try_from(number: u64) -> Result<Self, Self::Error> {
        Self::new(number)
    }
}

impl From<PrNumber> for u64 {
    fn from(number: PrNumber) -> u64 {
        number.get()
    }
}

/// A compose service name, as it appears in Docker object names and labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const KIND: &str = "service name";
        if value.is_empty() {
            return Err(NameError::Empty { kind: KIND });
        }
        if value.len() > 40 {
            return Err(NameError::TooLong {
                kind: KIND,
                value: printable(value),
                max: 40,
            });
        }
        let ok_chars = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        let ok_start = value.as_bytes()[0].is_ascii_alphanumeric();
        if !ok_chars || !ok_start {
            return Err(NameError::Invalid {
                kind: KIND,
                value: printable(value),
                why: "use letters, digits, `.`, `_` and `-`, starting with a letter or digit",
            });
        }
        Ok(Self(value.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn dns_like(kind: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            kind,
            value: printable(value),
            max,
        });
    }
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = value.as_bytes()[0].is_ascii_lowercase() && !value.ends_with('-');
    if !ok_chars || !ok_ends {
        return Err(NameError::Invalid {
            kind,
            value: printable(value),
            why: "use lowercase letters, digits and `-`, starting with a letter and not ending with `-`",
        });
    }
    Ok(())
}

/// `<anything>-pr-<digits>`: the shape of a pull request env's name.
fn looks_like_pull_request(name: &str) -> bool {
    match name.rsplit_once("-pr-") {
        Some((_, n)) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => name.starts_with("pr-") && name[3..].bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `Feature/Add_Login` becomes `feature-add-login`.
fn slugify(branch: &str) -> String {
    let mut slug = String::with_capacity(branch.len());
    for c in branch.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "branch".to_string()
    } else {
        slug.to_string()
    }
}

macro_rules! string_newtype_impls {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }
    )*};
}
string_newtype_impls!(RepoName, EnvName, BranchName, CommitSha, ServiceName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_request_numbers_are_positive_32_bit_integers() {
        for good in [1, 7, PrNumber::MAX] {
            let number = PrNumber::new(good).unwrap();
            assert_eq!(number.get(), good);
            assert_eq!(PrNumber::from_i64(number.as_i64()), Ok(number));
        }
        for bad in [0, PrNumber::MAX + 1, u64::from(u32::MAX) + 8, u64::MAX] {
            assert!(PrNumber::new(bad).is_err(), "{bad}");
        }
        assert!(PrNumber::from_i64(-1).is_err());
        assert!(serde_json::from_str::<PrNumber>("2147483648").is_err());
        assert!(serde_json::from_str::<PrNumber>("1.5").is_err());
        assert_eq!(
            serde_json::to_string(&PrNumber::new(42).unwrap()).unwrap(),
            "42"
        );
        assert_eq!(
            EnvName::for_pull_request(&RepoName::parse("shop").unwrap(), PrNumber::new(7).unwrap())
                .as_str(),
            "shop-pr-7"
        );
    }

    #[test]
    fn branch_names_with_path_tricks_are_refused() {
        for bad in [
            "../etc/passwd",
            "a/../b",
            "-rf",
            "--upload-pack=x",
            "a b",
            "a;rm -rf /",
            "$(id)",
            "a`b`",
            "x.lock",
            "a//b",
            "/abs",
            "a/",
            ".hidden",
            "HEAD",
            "a\nb",
            "a\\b",
            "a:b",
            "a~1",
            "a^",
            "a?",
            "a*",
            "a[",
            "a@{1}",
            "",
        ] {
            assert!(BranchName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for good in [
            "main",
            "feature-x",
            "feature/login",
            "release-1.2",
            "user/fix_thing+2",
        ] {
            assert!(
                BranchName::parse(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
    }

    #[test]
    fn env_names_come_from_repo_and_branch_slug() {
        let repo = RepoName::parse("demo").unwrap();
        let env = EnvName::for_branch(&repo, &BranchName::parse("feature-add-login").unwrap());
        assert_eq!(env.as_str(), "demo-feature-add-login");
        let lossy = EnvName::for_branch(&repo, &BranchName::parse("Feature/Add_Login").unwrap());
        assert!(
            lossy.as_str().starts_with("demo-feature-add-login-"),
            "{lossy}"
        );
        assert!(EnvName::parse(lossy.as_str()).is_ok());
    }

    #[test]
    fn branch_env_names_are_injective_and_never_a_pull_requests() {
        let repo = RepoName::parse("demo").unwrap();
        let name = |b: &str| EnvName::for_branch(&repo, &BranchName::parse(b).unwrap());
        let mut seen = std::collections::HashSet::new();
        for b in [
            "feat/a", "feat-a", "Feat_A", "feat_a", "FEAT-A", "feat.a", "feat+a", "feat--a",
        ] {
            assert!(seen.insert(name(b)), "{b} shares a name");
        }
        for b in ["pr-4", "PR-4", "pr/4", "x-pr-12", "pr-0"] {
            let n = name(b);
            assert!(!looks_like_pull_request(n.as_str()), "{b} -> {n}");
            assert_ne!(
                n,
                EnvName::for_pull_request(&repo, PrNumber::new(4).unwrap())
            );
        }
        let other = RepoName::parse("demo-pr").unwrap();
        let n = EnvName::for_branch(&other, &BranchName::parse("4").unwrap());
        assert_ne!(n.as_str(), "demo-pr-4");
        assert!(EnvName::parse(n.as_str()).is_ok());
    }

    #[test]
    fn branch_env_names_are_never_a_shared_envs() {
        let repo = RepoName::parse("demo").unwrap();
        let shared = EnvName::for_shared(&repo);
        assert_eq!(shared.as_str(), "demo-shared");
        assert!(shared.is_shared_of(&repo));
        assert!(!shared.is_shared_of(&RepoName::parse("dem").unwrap()));
        for b in ["shared", "Shared", "x-shared", "feature/shared"] {
            let n = EnvName::for_branch(&repo, &BranchName::parse(b).unwrap());
            assert!(!n.as_str().ends_with("-shared"), "{b} -> {n}");
            assert_ne!(n, shared);
            assert!(EnvName::parse(n.as_str()).is_ok(), "{n}");
        }
        // Repo `demo-x`'s shared env is not branch `x-shared` of repo `demo`.
        let other = EnvName::for_shared(&RepoName::parse("demo-x").unwrap());
        let n = EnvName::for_branch(&repo, &BranchName::parse("x-shared").unwrap());
        assert_ne!(n, other);
        // A branch that merely contains the word keeps its readable name.
        let n = EnvName::for_branch(&repo, &BranchName::parse("shared-cache").unwrap());
        assert_eq!(n.as_str(), "demo-shared-cache");
        assert!(
            !EnvName::for_branch(&repo, &BranchName::parse("main").unwrap()).is_shared_of(&repo)
        );
    }

    #[test]
    fn only_branches_come_from_users() {
        assert_eq!(
            BranchName::from_user("refs/heads/feature-x")
                .unwrap()
                .as_str(),
            "feature-x"
        );
        assert_eq!(
            BranchName::from_user("feature-x").unwrap().as_str(),
            "feature-x"
        );
        assert_eq!(
            BranchName::from_user("refs/pull/3/head").unwrap_err().to_string(),
            "`refs/pull/3/head` is a pull request head; PR envs are made by the pull request itself (and a fork's head needs `/slipway approve`)"
        );
        for bad in [
            "refs/pull/3/merge",
            "refs/tags/v1",
            "refs/remotes/origin/main",
            "refs/merge-requests/1/head",
            "refs/heads/refs/pull/3/head",
            "refs/notes/x",
            "refs",
            "HEAD",
            "FETCH_HEAD",
            "ORIG_HEAD",
            "main@{1}",
            "@",
            "0123456789abcdef0123456789abcdef01234567",
            "refs/heads/",
            "refs/heads/../x",
        ] {
            assert!(
                BranchName::from_user(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn long_branches_get_distinct_short_env_names() {
        let repo = RepoName::parse("demo").unwrap();
        let a = BranchName::parse(&format!("{}-a", "x".repeat(80))).unwrap();
        let b = BranchName::parse(&format!("{}-b", "x".repeat(80))).unwrap();
        let (ea, eb) = (
            EnvName::for_branch(&repo, &a),
            EnvName::for_branch(&repo, &b),
        );
        assert!(ea.as_str().len() <= MAX_ENV_NAME);
        assert_ne!(ea, eb);
        assert!(EnvName::parse(ea.as_str()).is_ok(), "{ea}");
    }

    #[test]
    fn service_and_repo_names_are_checked() {
        assert!(ServiceName::parse("web").is_ok());
        assert!(ServiceName::parse("../x").is_err());
        assert!(RepoName::parse("Demo").is_err());
        assert!(CommitSha::parse("abc").is_err());
    }
}
