//! The GitHub surface end to end: real signed webhook payloads (from the shared fixtures,
//! rewritten to point at a local repository) drive PR envs on the real Docker engine, and
//! the real octocrab client reports back to a GitHub world model served on loopback.

mod harness;

use std::time::{Duration, Instant};

use harness::github::*;
use harness::*;
use serde_json::Value;

const SECRET: &str = "webhook-secret-for-tests";
const LIGHT_COMPOSE: &str =
    "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n";

struct Setup {
    world: GitHubWorld,
    repo: TestRepo,
    server: Server,
    name: String,
    github: String,
}

/// A server linked to GitHub repository `acme/<name>` in a fresh world, serving either the
/// demo compose file or a one-service one.
fn setup(demo_files: bool) -> Setup {
    setup_with(demo_files, "", "1h")
}

fn setup_with(demo_files: bool, repo_settings: &str, sweep_every: &str) -> Setup {
    let name = unique_name("gh");
    let github = format!("acme/{name}");
    let world = GitHubWorld::start();
    world.add_repo(&github);
    world.set_permission(&github, "alice", "write");
    world.set_permission(&github, "bob", "read");
    let repo = TestRepo::new();
    if demo_files {
        repo.with_demo_files();
    } else {
        repo.write("compose.yml", LIGHT_COMPOSE);
    }
    repo.commit("base");
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"ghp_testtoken\"\nresync_interval = \"{sweep_every}\"\n",
        world.url()
    );
    let repo_extra =
        format!("github = \"{github}\"\nsecret_env = [\"API_TOKEN\"]\n{repo_settings}");
    let server = Server::start(ServerOptions {
        repo_name: &name,
        repo_url: repo.path(),
        env_file: if demo_files {
            "compose/demo.yml"
        } else {
            "compose.yml"
        },
        extra: "",
        repo_extra: &repo_extra,
        tables: &tables,
    });
    Setup {
        world,
        repo,
        server,
        name,
        github,
    }
}

impl Setup {
    /// A new commit on branch `feature`, published as the PR's head ref like GitHub does.
    fn push_feature(&self, number: u64, greeting: &str) -> String {
        let branch = self.repo.git(&["branch", "--show-current"]);
        if branch.trim() != "feature" {
            self.repo.git(&["checkout", "-q", "-B", "feature"]);
        }
        self.repo.write("greeting.txt", greeting);
        if self
            .repo
            .path()
            .join("compose/demo/web/Dockerfile")
            .exists()
        {
            let dockerfile = format!("FROM slipway/demo-app:latest\nENV GREETING=\"{greeting}\"\n");
            self.repo.write("compose/demo/web/Dockerfile", &dockerfile);
        }
        let sha = self.repo.commit(greeting);
        self.repo
            .git(&["update-ref", &format!("refs/pull/{number}/head"), &sha]);
        sha
    }

    fn send(&self, event: &str, delivery: &str, payload: &Value) -> (u16, String) {
        send_webhook(&self.server.url, SECRET, event, delivery, payload)
    }

    fn pr_payload(
        &self,
        action: &str,
        number: u64,
        sha: &str,
        head_repo: &str,
        sender: &str,
    ) -> Value {
        let clone_url = self.repo.path().display().to_string();
        pull_request_payload(
            action,
            &self.github,
            &clone_url,
            number,
            sha,
            "feature",
            head_repo,
            sender,
        )
    }

    fn env(&self, number: u64) -> String {
        format!("{}-pr-{number}", self.name)
    }

    fn wait_for_world(&self, what: &str, check: impl Fn(&GitHubWorld) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !check(&self.world) {
            assert!(
                Instant::now() < deadline,
                "GitHub never showed {what}; requests: {:#?}\n{}",
                self.world.requests(),
                self.server.tail_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the env exists and `check` holds.
    fn wait_for_env(&self, env: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.env_status(env).filter(|s| check(s)) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{env} never became {what}: {:?}\n{}",
                self.env_status(env),
                self.server.tail_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Status of the env, or `None` when Slipway has no such env.
    fn env_status(&self, env: &str) -> Option<Value> {
        let out = self.server.cli(&["status", env, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
}

fn slipway_comments(world: &GitHubWorld, github: &str, number: u64) -> Vec<Comment> {
    world
        .comments(github, number)
        .into_iter()
        .filter(|c| c.body.contains("<!-- slipway:env -->"))
        .collect()
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
    let url = url_of(&ready, "web");
    assert!(http_get(&url).1.contains("hello from the first push"));

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
fn bad_deliveries_are_refused_and_change_nothing() {
    let s = setup(false);
    let sha = s.push_feature(3, "x");
    s.world.add_pull(
        &s.github,
        PullSpec::new(3, &sha, "feature", &s.github, "alice"),
    );
    let payload = s.pr_payload("opened", 3, &sha, &s.github, "alice");
    let body = serde_json::to_vec(&payload).unwrap();
    let headers = |signature: &str| {
        vec![
            ("X-GitHub-Event".to_string(), "pull_request".to_string()),
            ("X-GitHub-Delivery".to_string(), "bad-1".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Hub-Signature-256".to_string(), signature.to_string()),
        ]
    };
    let send = |headers: Vec<(String, String)>, body: &[u8]| {
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        send_raw(&s.server.url, &refs, body)
    };
    let wrong = format!("sha256={}", "0".repeat(64));
    assert_eq!(send(headers(&wrong), &body).0, 401, "wrong signature");
    assert_eq!(send(headers(""), &body).0, 401, "missing signature");
    let truncated = &body[..body.len() / 2];
    let signed_truncated = sign_body(SECRET, truncated);
    assert_eq!(
        send(headers(&signed_truncated), truncated).0,
        400,
        "truncated JSON"
    );

    std::thread::sleep(Duration::from_secs(1));
    assert!(
        s.env_status(&s.env(3)).is_none(),
        "no env may come from refused deliveries"
    );
    assert!(s.world.comments(&s.github, 3).is_empty());

    // The same delivery twice: acknowledged twice, handled once.
    let (first, _) = s.send("pull_request", "dup-1", &payload);
    let (second, text) = s.send("pull_request", "dup-1", &payload);
    assert_eq!(first, 202);
    assert_eq!(second, 200, "{text}");
    let ready = s.wait_for_env(&s.env(3), "Ready", |e| e["phase"] == "Ready");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        s.env_status(&s.env(3)).unwrap()["generation"],
        ready["generation"]
    );
    assert_eq!(ready["generation"], 1, "handled once");
    let _cleanup = EnvCleanup(s.env(3));
    s.server.cli_json(&["down", &s.env(3), "--wait"]);
}

#[test]
fn fork_pull_requests_wait_for_approval_by_someone_with_write_access() {
    let s = setup(false);
    let env = s.env(9);
    let _cleanup = EnvCleanup(env.clone());
    let sha = s.push_feature(9, "from a fork");
    let fork = format!("mallory/{}", s.name);
    s.world.add_pull(
        &s.github,
        PullSpec::new(9, &sha, "feature", &fork, "mallory"),
    );
    assert_eq!(
        s.send(
            "pull_request",
            "fork-1",
            &s.pr_payload("opened", 9, &sha, &fork, "mallory")
        )
        .0,
        202
    );
    s.wait_for_world("a comment asking for approval and a pending status", |w| {
        let asks = slipway_comments(w, &s.github, 9)
            .iter()
            .any(|c| c.body.contains("/slipway approve"));
        let pending = w
            .statuses(&s.github, &sha)
            .iter()
            .any(|st| st.context == "slipway/env" && st.state == "pending");
        asks && pending
    });
    assert!(
        s.env_status(&env).is_none(),
        "a fork PR gets no env before approval"
    );

    // Someone with read permission cannot approve, nor run env commands.
    let comment = issue_comment_payload(&s.github, 9, "/slipway approve", "bob");
    assert_eq!(s.send("issue_comment", "fork-2", &comment).0, 202);
    let comment = issue_comment_payload(&s.github, 9, "please\n/slipway env up\n", "bob");
    assert_eq!(s.send("issue_comment", "fork-3", &comment).0, 202);
    s.wait_for_world("two refusals to bob", |w| {
        w.comments(&s.github, 9)
            .iter()
            .filter(|c| c.body.contains("@bob") && c.body.contains("write permission"))
            .count()
            == 2
    });
    assert!(
        s.env_status(&env).is_none(),
        "refused commands change nothing"
    );

    // A maintainer approves: the env comes up at exactly that commit.
    let comment = issue_comment_payload(&s.github, 9, "Looks safe.\n\n/slipway approve", "alice");
    assert_eq!(s.send("issue_comment", "fork-4", &comment).0, 202);
    let ready = s.wait_for_env(&env, "Ready", |e| e["phase"] == "Ready");
    assert_eq!(ready["commit"], sha.as_str());

    // A typo gets a helpful reply.
    let comment = issue_comment_payload(&s.github, 9, "/slipway evn status", "alice");
    assert_eq!(s.send("issue_comment", "fork-5", &comment).0, 202);
    s.wait_for_world("a did-you-mean reply", |w| {
        w.comments(&s.github, 9).iter().any(|c| {
            c.body.contains("env status") && c.body.to_lowercase().contains("did you mean")
        })
    });
    s.server.cli_json(&["down", &env, "--wait"]);
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
fn an_expired_pr_env_stays_deleted_until_someone_asks_again() {
    let s = setup_with(false, "default_ttl = \"6s\"", "1s");
    let env = s.env(11);
    let _cleanup = EnvCleanup(env.clone());
    let sha = s.push_feature(11, "short-lived");
    s.world.add_pull(
        &s.github,
        PullSpec::new(11, &sha, "feature", &s.github, "alice"),
    );
    assert_eq!(
        s.send(
            "pull_request",
            "ttl-1",
            &s.pr_payload("opened", 11, &sha, &s.github, "alice")
        )
        .0,
        202
    );
    s.wait_for_env(&env, "Ready", |e| e["phase"] == "Ready");
    let deleted = s.wait_for_env(&env, "Deleted by its TTL", |e| e["phase"] == "Deleted");
    // Several sweeps of the open PRs later, it is still deleted.
    std::thread::sleep(Duration::from_secs(4));
    let later = s.env_status(&env).unwrap();
    assert_eq!(later["phase"], "Deleted");
    assert_eq!(later["generation"], deleted["generation"]);
    // Asking again brings it back.
    let comment = issue_comment_payload(&s.github, 11, "/slipway env up", "alice");
    assert_eq!(s.send("issue_comment", "ttl-2", &comment).0, 202);
    s.wait_for_env(&env, "Ready again", |e| {
        e["phase"] == "Ready" && e["generation"] != deleted["generation"]
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

/// Issue 9 item 4: a fork's head named as a branch in a PR comment is refused with the
/// reason, and nothing is deployed; only `/slipway approve` deploys it.
#[test]
fn a_pull_request_head_asked_for_as_a_branch_is_refused_and_nothing_deploys() {
    let s = setup(false);
    let env = s.env(5);
    let _cleanup = EnvCleanup(env.clone());
    let sha = s.push_feature(5, "fork head");
    let fork = format!("mallory/{}", s.name);
    s.world.add_pull(
        &s.github,
        PullSpec::new(5, &sha, "feature", &fork, "mallory"),
    );
    let opened = s.pr_payload("opened", 5, &sha, &fork, "mallory");
    assert_eq!(s.send("pull_request", "refpr-1", &opened).0, 202);
    s.wait_for_world("the approval request", |w| {
        slipway_comments(w, &s.github, 5)
            .iter()
            .any(|c| c.body.contains("/slipway approve"))
    });

    let asks = [
        "/slipway env up branch:refs/pull/5/head",
        "/slipway env up refs/pull/5/merge",
    ];
    for (i, ask) in asks.iter().enumerate() {
        let comment = issue_comment_payload(&s.github, 5, ask, "alice");
        let delivery = format!("refpr-{}", i + 2);
        assert_eq!(s.send("issue_comment", &delivery, &comment).0, 202);
    }
    s.wait_for_world("two refusals naming the pull request path", |w| {
        w.comments(&s.github, 5)
            .iter()
            .filter(|c| {
                c.body.starts_with("@alice")
                    && c.body.contains("is a pull request head; PR envs are made by the pull request itself (and a fork's head needs `/slipway approve`)")
            })
            .count()
            == 2
    });
    let listed = s.server.cli_json(&["list", "--all"]);
    assert_eq!(listed, serde_json::json!([]), "nothing was deployed");
    assert!(s.env_status(&env).is_none());
}
