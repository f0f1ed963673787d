//! The GitHub surface end to end: real signed webhook payloads (from the shared fixtures,
//! rewritten to point at a local repository) drive PR envs on the real Docker engine, and
//! the real octocrab client reports back to a GitHub world model served on loopback. What
//! needs no Docker (refused deliveries, forks awaiting approval, TTLs, refused branches) is
//! tested in-process (`tests/surfaces/github.rs`).

mod harness;

use std::time::{Duration, Instant};

use harness::github::*;
use harness::prs::*;
use harness::*;

/// A `slipway serve` process linked to a fresh GitHub world.
fn setup(demo_files: bool) -> Setup {
    setup_with(demo_files, "", "1h", Server::start)
}

#[test]
fn a_pull_request_gets_an_env_that_follows_pushes_and_goes_away_when_closed() {
    let s = setup(true);
    let env = s.env(7);
    let _cleanup = EnvCleanup(env.clone());
    let first = s.push_feature(7, "hello from the first push");
    s.world.add_pull(
        &s.github,
        PullSpec::new(7, &first, "feature", &s.github, "alice"),
    );

    let (status, _) = s.send(
        "pull_request",
        "delivery-1",
        &s.pr_payload("opened", 7, &first, &s.github, "alice"),
    );
    assert_eq!(status, 202);
    let ready = s.wait_for_env(&env, "Ready", |e| e["phase"] == "Ready");
    assert_eq!(ready["commit"], first.as_str());
    assert!(http_get(&url_of(&ready, "web"))
        .1
        .contains("hello from the first push"));
    // What people are shown: the front-door URL.
    let url = front_door_url_of(&ready);

    s.wait_for_world(
        "one comment with the URL, a successful deployment and a green status",
        |w| {
            let comments = slipway_comments(w, &s.github, 7);
            let deployed = w.deployments(&s.github).iter().any(|d| {
                d.sha == first
                    && d.statuses.last().is_some_and(|st| {
                        st.state == "success" && st.environment_url.as_deref() == Some(url.as_str())
                    })
            });
            let green = w
                .statuses(&s.github, &first)
                .iter()
                .any(|st| st.context == "slipway/env" && st.state == "success");
            comments.len() == 1 && comments[0].body.contains(&url) && deployed && green
        },
    );
    let comment_id = slipway_comments(&s.world, &s.github, 7)[0].id;

    // A push: the env moves to the new commit and the same comment is edited.
    let second = s.push_feature(7, "hello from the second push");
    s.world.set_pull_head(&s.github, 7, &second);
    let (status, _) = s.send(
        "pull_request",
        "delivery-2",
        &s.pr_payload("synchronize", 7, &second, &s.github, "alice"),
    );
    assert_eq!(status, 202);
    let moved = s.server.wait_until(
        &env,
        "Ready at the second push",
        Duration::from_secs(120),
        |e| e["phase"] == "Ready" && e["commit"] == second.as_str(),
    );
    assert!(http_get(&url_of(&moved, "web"))
        .1
        .contains("hello from the second push"));
    s.wait_for_world(
        "the same comment edited for the second push and its deployment",
        |w| {
            let comments = slipway_comments(w, &s.github, 7);
            let deployed = w.deployments(&s.github).iter().any(|d| {
                d.sha == second && d.statuses.last().is_some_and(|st| st.state == "success")
            });
            comments.len() == 1
                && comments[0].id == comment_id
                && comments[0].body.contains(&second[..12])
                && deployed
        },
    );

    // The commands of every surface work in comments too, with this PR's env as default.
    let comment = issue_comment_payload(
        &s.github,
        7,
        "/slipway env list\n/slipway env extend by:1h\n/slipway env logs service:web tail:5",
        "alice",
    );
    assert_eq!(s.send("issue_comment", "delivery-c1", &comment).0, 202);
    s.wait_for_world("replies to env list, env extend and env logs", |w| {
        let replies: Vec<String> = w
            .comments(&s.github, 7)
            .into_iter()
            .map(|c| c.body)
            .filter(|b| b.starts_with("@alice"))
            .collect();
        let listed = replies
            .iter()
            .any(|b| b.contains("| environment |") && b.contains(&format!("`{env}`")));
        let extended = replies
            .iter()
            .any(|b| b.contains(&format!("`{env}` now expires in")));
        let logs = replies.iter().any(|b| {
            b.contains(&format!("the newest output of `{env}`"))
                || b.contains(&format!("`{env}` has no output yet"))
        });
        listed && extended && logs
    });

    // Closing removes the env and marks the deployment inactive.
    s.world.close_pull(&s.github, 7);
    let (status, _) = s.send(
        "pull_request",
        "delivery-3",
        &s.pr_payload("closed", 7, &second, &s.github, "alice"),
    );
    assert_eq!(status, 202);
    s.server
        .wait_until(&env, "Deleted", Duration::from_secs(60), |e| {
            e["phase"] == "Deleted"
        });
    assert!(containers_of(&env).is_empty());
    s.wait_for_world("the deployment inactive and the comment saying so", |w| {
        let inactive = w
            .deployments(&s.github)
            .iter()
            .any(|d| d.sha == second && d.statuses.last().is_some_and(|st| st.state == "inactive"));
        let comments = slipway_comments(w, &s.github, 7);
        inactive && comments.len() == 1 && comments[0].body.contains("closed")
    });
    assert!(
        s.world.unexpected().is_empty(),
        "unexpected API calls: {:?}",
        s.world.unexpected()
    );
}

#[test]
fn test_runs_report_a_check_run_with_the_failure_and_without_secrets() {
    let secret = "tok-9f8e7d6c5b4a3210";
    let s = setup(false);
    let compose = format!(
        "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
  tests:
    image: slipway/demo-app:latest
    command: [selftest]
    profiles: [test]
    environment:
      TARGET_URL: http://web:8080
      FAIL_TEST: '1'
      PRINT_SECRET: API_TOKEN
      API_TOKEN: {secret}
    depends_on:
      web: {{ condition: service_healthy }}
"
    );
    s.repo.git(&["checkout", "-q", "-B", "feature"]);
    s.repo.write("compose.yml", &compose);
    let sha = s.repo.commit("failing tests");
    s.repo.git(&["update-ref", "refs/pull/5/head", &sha]);
    let env = s.env(5);
    let _cleanup = EnvCleanup(env.clone());
    s.world.add_pull(
        &s.github,
        PullSpec::new(5, &sha, "feature", &s.github, "alice"),
    );
    assert_eq!(
        s.send(
            "pull_request",
            "tests-1",
            &s.pr_payload("opened", 5, &sha, &s.github, "alice")
        )
        .0,
        202
    );
    s.wait_for_world("a completed slipway/tests check run", |w| {
        w.check_runs(&s.github)
            .iter()
            .any(|c| c.name == "slipway/tests" && c.head_sha == sha && c.status == "completed")
    });
    let check = s
        .world
        .check_runs(&s.github)
        .into_iter()
        .find(|c| c.name == "slipway/tests")
        .unwrap();
    assert_eq!(check.conclusion.as_deref(), Some("failure"));
    let text = check.text.clone().unwrap_or_default();
    assert!(text.contains("assertion `left == right` failed"), "{text}");
    assert!(text.contains("Exit code:** 1"), "{text}");
    let everything = format!("{check:?} {:?}", s.world.comments(&s.github, 5));
    assert!(!everything.contains(secret), "the secret reached GitHub");
    assert!(
        check
            .annotations
            .iter()
            .any(|a| a["path"] == "tests/demo.rs" && a["start_line"] == 12),
        "{:?}",
        check.annotations
    );
    // The sticky comment shows the failed run too.
    s.wait_for_world("the comment showing the failed tests", |w| {
        slipway_comments(w, &s.github, 5)
            .iter()
            .any(|c| c.body.contains("Why the tests failed"))
    });
    // A rerun from the PR: a new check run for the same commit.
    let comment = issue_comment_payload(&s.github, 5, "/slipway test", "alice");
    assert_eq!(s.send("issue_comment", "tests-2", &comment).0, 202);
    s.wait_for_world("a second check run", |w| {
        w.check_runs(&s.github)
            .iter()
            .filter(|c| c.name == "slipway/tests" && c.status == "completed")
            .count()
            >= 2
    });
    s.server.cli_json(&["down", &env, "--wait"]);
}

#[test]
fn env_logs_on_a_pull_request_needs_write_permission_and_never_shows_a_secret() {
    let secret = "pr-s3cret-Value-91ab";
    let s = setup(false);
    // The web service prints its host name when it starts: here, the secret's value.
    let compose = format!(
        "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    environment:
      API_TOKEN: {secret}
      HOSTNAME: {secret}
"
    );
    s.repo.git(&["checkout", "-q", "-B", "feature"]);
    s.repo.write("compose.yml", &compose);
    let sha = s.repo.commit("a service that prints its secret");
    s.repo.git(&["update-ref", "refs/pull/11/head", &sha]);
    let env = s.env(11);
    let _cleanup = EnvCleanup(env.clone());
    s.world.add_pull(
        &s.github,
        PullSpec::new(11, &sha, "feature", &s.github, "alice"),
    );
    let opened = s.pr_payload("opened", 11, &sha, &s.github, "alice");
    assert_eq!(s.send("pull_request", "logs-1", &opened).0, 202);
    s.wait_for_env(&env, "Ready", |e| e["phase"] == "Ready");

    // Read permission (anyone, on a public repository) does not get the log.
    let comment = issue_comment_payload(&s.github, 11, "/slipway env logs", "bob");
    assert_eq!(s.send("issue_comment", "logs-2", &comment).0, 202);
    s.wait_for_world("the refusal to bob", |w| {
        w.comments(&s.github, 11).iter().any(|c| {
            c.body.starts_with("@bob")
                && c.body.contains("`env logs` needs the developer role")
                && c.body.contains("write permission")
        })
    });
    assert!(
        !s.world
            .comments(&s.github, 11)
            .iter()
            .any(|c| c.body.contains("the newest output")),
        "bob got no log"
    );

    // Write permission gets it, the value replaced by the redaction marker.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        let comment =
            issue_comment_payload(&s.github, 11, "/slipway env logs service:web", "alice");
        let delivery = format!("logs-alice-{attempt}");
        assert_eq!(s.send("issue_comment", &delivery, &comment).0, 202);
        s.wait_for_world("a reply to alice", |w| {
            w.comments(&s.github, 11)
                .iter()
                .filter(|c| c.body.starts_with("@alice"))
                .count()
                >= attempt
        });
        let replies: Vec<String> = s
            .world
            .comments(&s.github, 11)
            .into_iter()
            .map(|c| c.body)
            .filter(|b| b.starts_with("@alice"))
            .collect();
        let last = replies.last().unwrap().clone();
        if last.contains("demo-app serving on") || Instant::now() > deadline {
            break last;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        reply.contains("demo-app serving on 0.0.0.0:8080 as [REDACTED]"),
        "{reply}"
    );
    // Nothing Slipway sent to GitHub (comments, statuses, deployments, check runs) has it.
    for request in s.world.request_log() {
        assert!(
            !request.body.contains(secret),
            "{} {} sent the secret: {}",
            request.method,
            request.path,
            request.body
        );
    }
    s.server.cli_json(&["down", &env, "--wait"]);
}

/// GitHub's `delete` webhook of a branch marks its env at once (the resync's own look at
/// the repository, which still has the branch here, then takes the mark back: a forge's
/// word never outweighs the repository's).
#[test]
fn a_deleted_branch_webhook_marks_the_branch_env_and_the_repository_has_the_last_word() {
    let s = setup_with(false, "warn_before = \"1h\"", "1h", Server::start);
    s.repo.git(&["branch", "feature-x"]);
    let env = format!("{}-feature-x", s.name);
    let _cleanup = EnvCleanup(env.clone());
    s.server.up_ready("feature-x");

    let mut deleted = fixture("delete/payload.json");
    deleted["ref"] = "feature-x".into();
    deleted["ref_type"] = "branch".into();
    deleted["repository"]["full_name"] = s.github.as_str().into();
    let (status, body) = s.send("delete", "delete-1", &deleted);
    assert_eq!(status, 202, "{body}");
    let told = |s: &serde_json::Value, what: &str| {
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "branch" && e["message"].as_str().unwrap().contains(what))
    };
    let status = s.wait_for_env(&env, "marked, then cleared", |e| {
        told(e, "branch feature-x is gone from the repository")
            && told(e, "branch feature-x is back")
    });
    assert_eq!(status["phase"], "Ready", "{status:#}");
    assert!(status["idle"]["branch_gone_at"].is_null(), "{status:#}");
}
