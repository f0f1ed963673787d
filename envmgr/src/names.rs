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

    /// The name of the env that serves `branch` of `repo`. Long names are cut and given a
    /// short hash of the branch, so two long branches never share an env.
    pub fn for_branch(repo: &RepoName, branch: &BranchName) -> Self {
        let slug = slugify(branch.as_str());
        let full = format!("{}-{}", repo.as_str(), slug);
        if full.len() <= MAX_ENV_NAME {
            return Self(full);
        }
        let hash = hex::encode(&Sha256::digest(branch.as_str().as_bytes())[..3]);
        let keep = MAX_ENV_NAME - hash.len() - 1;
        let cut = full[..keep].trim_end_matches('-');
        Self(format!("{cut}-{hash}"))
    }

    /// The name of the env that serves pull request `number` of `repo`.
    pub fn for_pull_request(repo: &RepoName, number: u64) -> Self {
        Self(format!("{}-pr-{number}", repo.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
        let env = EnvName::for_branch(&repo, &BranchName::parse("Feature/Add_Login").unwrap());
        assert_eq!(env.as_str(), "demo-feature-add-login");
        assert!(EnvName::parse(env.as_str()).is_ok());
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
