//! The submit queue end to end, with real git and the real Docker engine: changes queued
//! through the CLI (branches, for teams without GitHub) and through `/slipway merge` on pull
//! requests (the GitHub world model), candidates built as merge commits of the exact tree
//! main will have, tested in their own envs, and landed by compare-and-swap pushes.

mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::github::*;
use harness::*;
use serde_json::Value;

const SECRET: &str = "webhook-secret-for-queue-tests";

/// A web service and a test service built from `checks/`: its Dockerfile decides whether the
/// demo's selftest fails (`FAIL_TEST=1`).
const COMPOSE: &str = "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
  tests:
    build: ./checks
    command: [selftest]
    profiles: [test]
    environment:
      TARGET_URL: http://web:8080
    depends_on:
      web: { condition: service_healthy }
";

/// Change A sets `PART_A`; change B sets `FAIL_TEST` from it. Each alone passes; together
/// the tests fail. The lines between keep the two edits from touching (no git conflict).
const CHECKS_BASE: &str = "FROM slipway/demo-app:latest\n# part a\n# --\n# --\n# --\n# part b\n";

/// A working repository (where changes are made) and a bare one (the remote Slipway
/// fetches from and pushes to, like a forge's).
struct Remote {
    work: TestRepo,
    bare: tempfile::TempDir,
}

impl Remote {
    fn new(name: &str) -> Remote {
        let work = TestRepo::new();
        work.write("compose.yml", COMPOSE)
            .write("checks/Dockerfile", &format!("{CHECKS_BASE}# {name}\n"))
            .write("README.md", "queue test\n")
            .commit("base");
        let bare = tempfile::tempdir().unwrap();
        work.git(&[
            "clone",
            "--quiet",
            "--bare",
            work.path().to_str().unwrap(),
            bare.path().to_str().unwrap(),
        ]);
        work.git(&["remote", "add", "origin", bare.path().to_str().unwrap()]);
        Remote { work, bare }
    }

    fn path(&self) -> &Path {
        self.bare.path()
    }

    /// A branch off main changing one file; pushed; returns its head.
    fn branch(&self, branch: &str, file: &str, from: &str, to: &str) -> String {
        self.work.git(&["checkout", "--quiet", "main"]);
        self.work.git(&["checkout", "--quiet", "-B", branch]);
        let path = self.work.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let changed = if from.is_empty() {
            format!("{text}{to}")
        } else {
            text.replacen(from, to, 1)
        };
        self.work.write(file, &changed);
        let head = self.work.commit(&format!("change {branch}"));
        self.work.git(&[
            "push",
            "--quiet",
            "--force",
            "origin",
            &format!("{branch}:refs/heads/{branch}"),
        ]);
        self.work.git(&["checkout", "--quiet", "main"]);
        head
    }

    /// Publishes a branch's head as GitHub does for a pull request.
    fn publish_pull(&self, number: u64, head: &str) {
        self.bare_git(&["update-ref", &format!("refs/pull/{number}/head"), head]);
    }

    fn bare_git(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn main_head(&self) -> String {
        self.bare_git(&["rev-parse", "refs/heads/main"])
    }

    fn main_file(&self, file: &str) -> String {
        self.bare_git(&["show", &format!("refs/heads/main:{file}")])
    }

    fn is_ancestor(&self, commit: &str, of: &str) -> bool {
        std::process::Command::new("git")
            .args(["merge-base", "--is-ancestor", commit, of])
            .current_dir(self.path())
            .status()
            .unwrap()
            .success()
    }

    /// Someone pushes straight to main (not through the queue).
    fn push_to_main(&self, file: &str, contents: &str) -> String {
        self.work.git(&["checkout", "--quiet", "main"]);
        self.work
            .git(&["pull", "--quiet", "--ff-only", "origin", "main"]);
        self.work.write(file, contents);
        let head = self.work.commit("outside push");
        self.work.git(&["push", "--quiet", "origin", "main"]);
        head
    }
}

fn server_for(name: &str, remote: &Remote, repo_extra: &str, tables: &str) -> Server {
    Server::start(ServerOptions {
        repo_name: name,
        repo_url: remote.path(),
        env_file: "compose.yml",
        extra: "",
        repo_extra: &format!("test_timeout = \"3m\"\n{repo_extra}"),
        tables,
    })
}

fn queue_json(server: &Server, args: &[&str]) -> Value {
    let mut all: Vec<&str> = vec!["queue"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = server.cli_raw(&all);
    assert!(
        out.status.success(),
        "slipway {all:?} failed: {}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.tail_log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `queue list --json` until `done` holds for the entries; returns them.
fn wait_for_entries(
    server: &Server,
    repo: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = queue_json(server, &["list", "--repo", repo]);
        let entries = list.as_array().unwrap().clone();
        if done(&entries) {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {entries:#?}\n--- server log ---\n{}",
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn state_of<'a>(entries: &'a [Value], change: &str) -> &'a str {
    entries
        .iter()
        .rev()
        .find(|e| e["change"] == change)
        .and_then(|e| e["state"].as_str())
        .unwrap_or("absent")
}

fn finished(entries: &[Value], changes: &[&str]) -> bool {
    changes
        .iter()
        .all(|c| matches!(state_of(entries, c), "merged" | "failed" | "removed"))
}

/// No candidate env of the repo is left (they are deleted once the queue is done with them).
fn wait_candidates_gone(server: &Server, repo: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let envs = server.cli_json(&["list"]);
        let left: Vec<String> = envs
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .filter(|n| n.starts_with(&format!("{repo}-q-")))
            .map(str::to_owned)
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "candidate envs left behind: {left:?}\n{}",
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Three branches queued at once: A and C are good, B is good alone but breaks the tests on
/// top of A. Main ends at a tree that passed, with A and C and without B.
#[test]
fn branches_land_in_order_and_the_bad_combination_is_evicted() {
    let name = unique_name("qb");
    let remote = Remote::new(&name);
    let a = remote.branch("change-a", "checks/Dockerfile", "# part a", "ENV PART_A=1");
    let b = remote.branch(
        "change-b",
        "checks/Dockerfile",
        "# part b",
        "ENV FAIL_TEST=${PART_A:-0}",
    );
    let c = remote.branch("change-c", "README.md", "", "more docs\n");
    let base = remote.main_head();
    let server = server_for(&name, &remote, "", "");

    for branch in ["change-a", "change-b", "change-c"] {
        let entry = queue_json(&server, &["add", branch, "--repo", &name]);
        assert_eq!(entry["state"], "queued", "{entry:#}");
        assert_eq!(entry["branch"], branch);
        assert!(entry["position"].as_u64().is_some(), "{entry:#}");
    }
    let entries = wait_for_entries(
        &server,
        &name,
        "all three to finish",
        Duration::from_secs(600),
        |e| finished(e, &["change-a", "change-b", "change-c"]),
    );
    assert_eq!(state_of(&entries, "change-a"), "merged", "{entries:#?}");
    assert_eq!(state_of(&entries, "change-b"), "failed", "{entries:#?}");
    assert_eq!(state_of(&entries, "change-c"), "merged", "{entries:#?}");
    let failed = entries.iter().find(|e| e["change"] == "change-b").unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("tests failed"),
        "{failed:#}"
    );

    let main = remote.main_head();
    assert!(
        remote.is_ancestor(&base, &main),
        "main moved by fast-forward only"
    );
    assert!(remote.is_ancestor(&a, &main) && remote.is_ancestor(&c, &main));
    assert!(
        !remote.is_ancestor(&b, &main),
        "the bad change is not on main"
    );
    let checks = remote.main_file("checks/Dockerfile");
    assert!(
        checks.contains("ENV PART_A=1") && !checks.contains("FAIL_TEST"),
        "{checks}"
    );
    assert!(remote.main_file("README.md").contains("more docs"));
    wait_candidates_gone(&server, &name);

    // Shown as a table too.
    let out = server.cli_raw(&["queue", "list", "--repo", &name]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("POSITION") && table.contains("change-b"),
        "{table}"
    );
}

/// Pause holds landing (tests still run); resume lands. A push to main by someone else while
/// a change is under test makes the queue rebuild on top of it, never force.
#[test]
fn pause_holds_landing_and_an_outside_push_is_never_overwritten() {
    let name = unique_name("qp");
    let remote = Remote::new(&name);
    let a = remote.branch("change-a", "README.md", "", "a\n");
    let server = server_for(&name, &remote, "", "");
    let paused = queue_json(&server, &["pause", "release", "freeze", "--repo", &name]);
    assert_eq!(paused["paused"], true, "{paused:#}");
    assert_eq!(paused["pause_reason"], "release freeze");
    let before = remote.main_head();
    queue_json(&server, &["add", "change-a", "--repo", &name]);
    wait_for_entries(&server, &name, "a to pass", Duration::from_secs(300), |e| {
        state_of(e, "change-a") == "passed"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(remote.main_head(), before, "nothing lands while paused");

    // Someone pushes to main meanwhile; then the tree opens.
    let outside = remote.push_to_main("OUTSIDE.md", "pushed by hand\n");
    queue_json(&server, &["resume", "--repo", &name]);
    wait_for_entries(&server, &name, "a to land", Duration::from_secs(300), |e| {
        state_of(e, "change-a") == "merged"
    });
    let main = remote.main_head();
    assert!(
        remote.is_ancestor(&outside, &main),
        "the outside push was kept"
    );
    assert!(remote.is_ancestor(&a, &main));
    wait_candidates_gone(&server, &name);
}

/// `kill -9` of the server right when a change passed (landing under way): after a restart
/// it lands exactly once.
#[test]
fn kill_during_landing_lands_exactly_once() {
    let name = unique_name("qk");
    let remote = Remote::new(&name);
    let a = remote.branch("change-a", "README.md", "", "a\n");
    let mut server = server_for(&name, &remote, "", "");
    queue_json(&server, &["add", "change-a", "--repo", &name]);
    wait_for_entries(&server, &name, "a to pass", Duration::from_secs(300), |e| {
        matches!(state_of(e, "change-a"), "passed" | "merged")
    });
    server.kill9();
    server.spawn();
    let entries = wait_for_entries(&server, &name, "a to land", Duration::from_secs(300), |e| {
        state_of(e, "change-a") == "merged"
    });
    assert_eq!(
        entries.iter().filter(|e| e["change"] == "change-a").count(),
        1
    );
    let merges = remote.bare_git(&["log", "--merges", "--format=%H", "refs/heads/main"]);
    assert_eq!(merges.lines().count(), 1, "one merge commit: {merges}");
    assert!(remote.is_ancestor(&a, &remote.main_head()));
    wait_candidates_gone(&server, &name);
}

/// A team's repository may be a working copy with main checked out (like the bundled demo
/// repo): the queue lands there too, moving main and its clean working tree. With no test
/// services, a candidate passes when its env is Ready.
#[test]
fn a_working_copy_with_main_checked_out_gets_the_landing() {
    let name = unique_name("qw");
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n",
    )
    .commit("base");
    repo.checkout_new("docs");
    repo.write("DOCS.md", "docs\n");
    let docs = repo.commit("docs");
    repo.git(&["checkout", "--quiet", "main"]);
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    queue_json(&server, &["add", "docs", "--repo", &name]);
    wait_for_entries(
        &server,
        &name,
        "docs to land",
        Duration::from_secs(300),
        |e| state_of(e, "docs") == "merged",
    );
    let main = repo.git(&["rev-parse", "main"]);
    let ancestor = std::process::Command::new("git")
        .args(["merge-base", "--is-ancestor", &docs, main.trim()])
        .current_dir(repo.path())
        .status()
        .unwrap();
    assert!(ancestor.success(), "main contains the change");
    assert_eq!(
        std::fs::read_to_string(repo.path().join("DOCS.md")).unwrap(),
        "docs\n",
        "the working tree follows"
    );
    wait_candidates_gone(&server, &name);
}

/// The same queue through pull requests: `/slipway merge` on approved PRs, answered with a
/// position; the bad combination's PR gets the failure with its snippet, the good ones are
/// landed and told so; an unapproved PR is refused with what it needs.
#[test]
fn pull_requests_are_queued_by_comment_and_land() {
    let name = unique_name("qg");
    let github = format!("acme/{name}");
    let world = GitHubWorld::start();
    world.add_repo(&github);
    world.set_permission(&github, "alice", "write");
    let remote = Remote::new(&name);
    let heads = [
        remote.branch("change-a", "checks/Dockerfile", "# part a", "ENV PART_A=1"),
        remote.branch(
            "change-b",
            "checks/Dockerfile",
            "# part b",
            "ENV FAIL_TEST=${PART_A:-0}",
        ),
        remote.branch("change-c", "README.md", "", "c\n"),
    ];
    for (i, head) in heads.iter().enumerate() {
        let number = i as u64 + 1;
        remote.publish_pull(number, head);
        world.add_pull(
            &github,
            PullSpec::new(
                number,
                head,
                &format!("change-{}", ["a", "b", "c"][i]),
                &github,
                "alice",
            ),
        );
        if number != 3 {
            world.add_review(&github, number, "carol", "APPROVED");
        }
    }
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"ghp_testtoken\"\nresync_interval = \"1h\"\n",
        world.url()
    );
    let server = server_for(&name, &remote, &format!("github = \"{github}\"\n"), &tables);

    // PR 3 has no approval yet: refused, and told why.
    comment(&world, &server, &github, 3, "/slipway merge");
    wait_for_comment(&world, &github, 3, "approving review");
    world.add_review(&github, 3, "carol", "APPROVED");
    for number in 1..=3 {
        comment(&world, &server, &github, number, "/slipway merge");
    }
    wait_for_comment(&world, &github, 1, "in line");
    let entries = wait_for_entries(
        &server,
        &name,
        "the three PRs",
        Duration::from_secs(600),
        |e| finished(e, &["#1", "#2", "#3"]),
    );
    assert_eq!(state_of(&entries, "#1"), "merged", "{entries:#?}");
    assert_eq!(state_of(&entries, "#2"), "failed", "{entries:#?}");
    assert_eq!(state_of(&entries, "#3"), "merged", "{entries:#?}");
    let main = remote.main_head();
    assert!(remote.is_ancestor(&heads[0], &main) && remote.is_ancestor(&heads[2], &main));
    assert!(!remote.is_ancestor(&heads[1], &main));
    let failure = wait_for_comment(&world, &github, 2, "left the submit queue");
    assert!(failure.contains("Full log:"), "{failure}");
    wait_for_comment(&world, &github, 1, "Landed on `main`");
    let statuses = world.statuses(&github, &heads[1]);
    assert!(
        statuses
            .iter()
            .any(|s| s.context == "slipway/queue" && s.state == "failure"),
        "{statuses:?}"
    );
    wait_candidates_gone(&server, &name);
}

fn comment(world: &GitHubWorld, server: &Server, github: &str, number: u64, body: &str) {
    world.add_comment(github, number, "alice", body);
    let payload = issue_comment_payload(github, number, body, "alice");
    let delivery = unique_name("delivery");
    let (status, text) = send_webhook(&server.url, SECRET, "issue_comment", &delivery, &payload);
    assert!(status < 300, "{status}: {text}");
}

fn wait_for_comment(world: &GitHubWorld, github: &str, number: u64, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(c) = world
            .comments(github, number)
            .into_iter()
            .find(|c| c.body.contains(needle))
        {
            return c.body;
        }
        assert!(
            Instant::now() < deadline,
            "no comment on #{number} containing {needle:?}: {:#?}",
            world.comments(github, number)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
