//! End to end (real server, real git, real Docker): what names a branch env, and what a
//! branch env may be made from.
//! - Only branches: a pull request head, a tag, a remote-tracking ref or a commit asked for
//!   as a "branch" is refused on the CLI and the API, and nothing is deployed.
//! - Names never move: branches whose slugs collide, a branch named like a PR env, and two
//!   repos whose `<repo>-<branch>` agree each end as distinct envs or a clear refusal.
//! - `extend` is checked arithmetic, capped at 30 days.

mod harness;

use std::time::Duration;

use harness::*;
use serde_json::json;

const ONE_SERVICE: &str =
    "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n";

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn only_branches_become_branch_envs_on_every_surface() {
    let name = unique_name("refs");
    let repo = TestRepo::new();
    repo.write("compose.yml", ONE_SERVICE).commit("main");
    let main_sha = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    // An unapproved fork head, as GitHub serves it under refs/pull/.
    repo.checkout_new("fork-work");
    repo.write("evil.txt", "fork").commit("fork head");
    let fork_sha = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    repo.git(&["update-ref", "refs/pull/3/head", &fork_sha]);
    repo.git(&["update-ref", "refs/tags/v1", &fork_sha]);
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["branch", "-q", "-D", "fork-work"]);
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));

    let pr_head = "`refs/pull/3/head` is a pull request head; PR envs are made by the pull request itself (and a fork's head needs `/slipway approve`)";
    for (branch, expected) in [
        ("refs/pull/3/head", pr_head),
        ("refs/pull/3/merge", "pull request head"),
        ("refs/tags/v1", "is not a branch"),
        ("refs/remotes/origin/main", "is not a branch"),
        ("refs/heads/refs/pull/3/head", "is not a branch"),
        (fork_sha.as_str(), "commit id"),
        ("HEAD", "HEAD"),
        ("main@{1}", "branch"),
    ] {
        let out = server.cli(&["up", branch, "--repo", &name]);
        assert!(!out.status.success(), "{branch}: must be refused");
        assert!(
            stderr_of(&out).contains(expected),
            "{branch}: {}",
            stderr_of(&out)
        );
        let (status, body) = http_post_json(
            &format!("{}/api/v1/envs", server.url),
            &json!({"branch": branch, "repo": name}),
        );
        assert_eq!(status, 400, "{branch}: {body}");
        assert!(body.contains(expected), "{branch}: {body}");
    }
    let listed = server.cli_json(&["list", "--all"]);
    assert_eq!(listed, json!([]), "nothing was even requested");

    // `pull/3/head` is a legal branch name; it is fetched as `refs/heads/pull/3/head` (which
    // does not exist), never resolved by git to the pull request's head.
    let out = server.cli(&["up", "pull/3/head", "--repo", &name, "--wait"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("does not exist"),
        "{}",
        stderr_of(&out)
    );
    let failed = server.cli_json(&["list", "--all"]);
    let failed = &failed.as_array().unwrap()[0];
    assert_eq!(failed["phase"], "Failed");
    assert!(failed["commit"].is_null(), "{failed:#}");

    // `refs/heads/main` is `main`: same branch, same env.
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    let record = server.cli_json(&["up", "refs/heads/main", "--repo", &name, "--wait"]);
    assert_eq!(record["name"], env.as_str());
    assert_eq!(record["branch"], "main");
    assert_eq!(record["phase"], "Ready");
    assert_eq!(record["commit"], main_sha.as_str());
}

#[test]
fn env_names_never_move_between_branches_prs_or_repos() {
    let name = unique_name("coll");
    let other = format!("{name}-x");
    let repo = TestRepo::new();
    repo.write("compose.yml", "services: {}\n").commit("main");
    for branch in ["feat/a", "feat-a", "Feat_A", "pr-4", "x-y"] {
        repo.git(&["branch", branch]);
    }
    let other_repo = TestRepo::new();
    other_repo
        .write("compose.yml", "services: {}\n")
        .commit("main");
    other_repo.git(&["branch", "y"]);
    let tables = format!(
        "[[repo]]\nname = \"{other}\"\nurl = \"{}\"\nenv_file = \"compose.yml\"\n",
        other_repo.path().display()
    );
    let server = Server::start(ServerOptions {
        tables: &tables,
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });

    // Three branches whose slugs agree: three envs, each serving its own branch.
    let mut names = std::collections::HashSet::new();
    for branch in ["feat/a", "feat-a", "Feat_A"] {
        let record = server.cli_json(&["up", branch, "--repo", &name]);
        assert_eq!(record["branch"], branch);
        assert!(
            names.insert(record["name"].as_str().unwrap().to_string()),
            "{record:#}"
        );
    }
    assert!(names.contains(&format!("{name}-feat-a")), "{names:?}");
    for branch in ["feat/a", "feat-a", "Feat_A"] {
        let again = server.cli_json(&["up", branch, "--repo", &name]);
        assert_eq!(again["branch"], branch);
        assert_eq!(again["generation"], 2, "the same env again: {again:#}");
    }

    // A branch named like a PR env gets a name no PR env has.
    let pr_like = server.cli_json(&["up", "pr-4", "--repo", &name]);
    assert_ne!(pr_like["name"], format!("{name}-pr-4").as_str());
    assert!(pr_like["pull_request"].is_null());

    // Repo `<name>-x` branch `y` and repo `<name>` branch `x-y` agree on `<name>-x-y`:
    // the second is refused with the owner named, and the first is untouched.
    let first = server.cli_json(&["up", "y", "--repo", &other]);
    assert_eq!(first["name"], format!("{name}-x-y").as_str());
    let out = server.cli(&["up", "x-y", "--repo", &name]);
    assert!(!out.status.success());
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!(
            "env `{name}-x-y` belongs to repo `{other}` branch `y`"
        )),
        "{stderr}"
    );
    let (status, body) = http_post_json(
        &format!("{}/api/v1/envs", server.url),
        &json!({"branch": "x-y", "repo": name}),
    );
    assert_eq!(status, 409, "{body}");
    let still = server.status(&format!("{name}-x-y"));
    assert_eq!(
        (still["repo"].as_str(), still["branch"].as_str()),
        (Some(other.as_str()), Some("y"))
    );
    assert_eq!(still["generation"], 1);
}

#[test]
fn extend_by_an_absurd_duration_is_capped_never_wrapped() {
    let name = unique_name("ext");
    let repo = TestRepo::new();
    repo.write("compose.yml", "services: {}\n").commit("main");
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let env = format!("{name}-main");
    server.cli_json(&["up", "main", "--repo", &name, "--ttl", "1h"]);
    let small = server.cli(&["extend", &env, "--by", "1h"]);
    let stdout = String::from_utf8_lossy(&small.stdout);
    assert!(
        stdout.contains("expires in 1h 59m") || stdout.contains("expires in 2h"),
        "{stdout}"
    );
    assert!(!stdout.contains("capped"), "{stdout}");
    // Past what a duration can hold at all: a clear usage error, nothing changes.
    let out = server.cli(&["extend", &env, "--by", "99999999999999999999999s"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("too long"), "{}", stderr_of(&out));
    for by in ["9300000000000000s", "18446744073709551615s", "31d", "500y"] {
        let out = server.cli(&["extend", &env, "--by", by]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{by}: {}", stderr_of(&out));
        assert!(stdout.contains("capped at 30 days"), "{by}: {stdout}");
        assert!(
            stdout.contains("expires in 30d") || stdout.contains("expires in 29d 23h"),
            "{by}: {stdout}"
        );
        let record = server.status(&env);
        let left = record["expires_at"].as_i64().unwrap() - envmgr::store::now_ms();
        assert!(
            left > 29 * 24 * 3_600_000 && left <= 30 * 24 * 3_600_000,
            "{by}: {left}"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let record = server.status(&env);
    assert_eq!(record["desired"], "running", "{record:#}");
    assert!(
        !record["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "expired"),
        "{record:#}"
    );
}
