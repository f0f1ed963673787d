//! The GitHub surface in-process: signed webhook payloads drive pull-request envs on the
//! runtime's test twin, and the real octocrab client reports back to the GitHub world model.
//! Refused and repeated deliveries change nothing, a fork waits for approval by someone with
//! write access, an expired PR env stays deleted, and a PR head asked for as a branch is
//! refused.

use std::time::Duration;

use crate::harness::github::*;
use crate::harness::prs::*;
use crate::harness::*;
use crate::support::InProcessServer;

/// An in-process Slipway linked to a fresh GitHub world, sweeping every hour.
fn setup(demo_files: bool) -> Setup<InProcessServer> {
    setup_with(demo_files, "", "1h", InProcessServer::start)
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
    s.server.cli_json(&["down", &s.env(3), "--wait"]);
}

#[test]
fn fork_pull_requests_wait_for_approval_by_someone_with_write_access() {
    let s = setup(false);
    let env = s.env(9);
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
fn an_expired_pr_env_stays_deleted_until_someone_asks_again() {
    // The twin starts an env at once: 3 s leave ample time to see it Ready before it expires.
    let s = setup_with(false, "default_ttl = \"3s\"", "1s", InProcessServer::start);
    let env = s.env(11);
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

/// Issue 9 item 4: a fork's head named as a branch in a PR comment is refused with the
/// reason, and nothing is deployed; only `/slipway approve` deploys it.
#[test]
fn a_pull_request_head_asked_for_as_a_branch_is_refused_and_nothing_deploys() {
    let s = setup(false);
    let env = s.env(5);
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

/// Issue 11: a push to a queued pull request takes it out of the queue (its approval was for
/// the old head), and the pull request is told why.
#[test]
fn a_push_to_a_queued_pull_request_takes_it_out() {
    let s = setup(false);
    let first = s.push_feature(5, "one");
    s.world.add_pull(
        &s.github,
        PullSpec::new(5, &first, "feature", &s.github, "alice"),
    );
    s.world.add_review(&s.github, 5, "carol", "APPROVED");
    // Closed tree: the change is tested but cannot land before the push.
    let paused = s
        .server
        .cli_raw(&["queue", "pause", "hold", "--repo", &s.name, "--json"]);
    assert!(paused.status.success(), "{}", s.server.tail_log());
    let merge = issue_comment_payload(&s.github, 5, "/slipway merge", "alice");
    assert_eq!(s.send("issue_comment", "q-1", &merge).0, 202);
    s.wait_for_world("the queue's answer", |w| {
        w.comments(&s.github, 5)
            .iter()
            .any(|c| c.body.contains("1st in line"))
    });

    let second = s.push_feature(5, "two");
    s.world.set_pull_head(&s.github, 5, &second);
    let sync = s.pr_payload("synchronize", 5, &second, &s.github, "alice");
    assert_eq!(s.send("pull_request", "q-2", &sync).0, 202);
    s.wait_for_world("the removal told on the PR", |w| {
        w.comments(&s.github, 5)
            .iter()
            .any(|c| c.body.contains("left the submit queue") && c.body.contains("new commits"))
    });
    let out = s
        .server
        .cli_raw(&["queue", "status", "5", "--repo", &s.name, "--json"]);
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["state"], "removed", "{entry:#}");
    assert!(
        entry["reason"].as_str().unwrap().contains("new commits"),
        "{entry:#}"
    );
    assert_eq!(entry["head"], first.as_str());
}

/// Issue 12 item 1: with the front door on `preview.example.com`, the env's JSON carries its
/// front-door URL (`url`, and each service's `front_door_url`) beside the direct host-port
/// URLs, and the PR comment, the deployment and `env status` show the front-door URL.
#[test]
fn a_pull_request_env_is_shown_at_its_front_door_url() {
    let proxy = "[proxy]\nlisten = \"127.0.0.1:0\"\ndomain = \"preview.example.com\"\n\
                 proxy_url = \"https://preview.example.com\"\n";
    let s = setup_with_tables(false, "", "1h", proxy, InProcessServer::start);
    let env = s.env(12);
    let sha = s.push_feature(12, "behind the front door");
    s.world.add_pull(
        &s.github,
        PullSpec::new(12, &sha, "feature", &s.github, "alice"),
    );
    let payload = s.pr_payload("opened", 12, &sha, &s.github, "alice");
    assert_eq!(s.send("pull_request", "door-1", &payload).0, 202);
    let ready = s.wait_for_env(&env, "Ready", |e| e["phase"] == "Ready");

    let front_door = format!("https://{env}.preview.example.com/");
    assert_eq!(ready["url"], front_door.as_str(), "{ready:#}");
    let web = &ready["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["front_door_url"], front_door.as_str());
    // The direct host-port URL stays where it was, for raw TCP and other tools.
    let direct = url_of(&ready, "web");
    assert!(direct.starts_with("http://envs.example.com:"), "{direct}");
    let listed = s.server.cli_json(&["list"]);
    let listed = listed
        .as_array()
        .and_then(|envs| envs.iter().find(|e| e["name"] == env.as_str()))
        .unwrap_or_else(|| panic!("{env} not in {listed:#}"));
    assert_eq!(listed["url"], front_door.as_str());

    s.wait_for_world("a comment and a deployment with the front-door URL", |w| {
        let commented = slipway_comments(w, &s.github, 12)
            .iter()
            .any(|c| c.body.contains(&format!("web: {front_door}")) && !c.body.contains(&direct));
        let deployed = w.deployments(&s.github).iter().any(|d| {
            d.statuses.last().is_some_and(|st| {
                st.state == "success" && st.environment_url.as_deref() == Some(front_door.as_str())
            })
        });
        commented && deployed
    });
    let status = s.server.cli(&["status", &env]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("{front_door}  (direct: {direct})")),
        "{text}"
    );
    s.server.cli_json(&["down", &env, "--wait"]);
}

/// Issue 12 item 4: the warning of an idle deletion reaches the PR once per deadline, as a comment of its
/// own (people are notified) and as a line in the sticky comment; `env pin` on the PR takes
/// the line away and the env stays.
#[test]
fn a_pr_is_warned_once_before_its_idle_env_is_deleted() {
    // Deleted after an hour idle, warned two hours ahead: warned as soon as it exists.
    let s = setup_with(
        false,
        "default_ttl = \"24h\"\nidle_delete = \"1h\"\nwarn_before = \"2h\"",
        "1h",
        InProcessServer::start,
    );
    let env = s.env(13);
    let sha = s.push_feature(13, "soon idle");
    s.world.add_pull(
        &s.github,
        PullSpec::new(13, &sha, "feature", &s.github, "alice"),
    );
    let opened = s.pr_payload("opened", 13, &sha, &s.github, "alice");
    assert_eq!(s.send("pull_request", "warn-1", &opened).0, 202);
    s.wait_for_env(&env, "Ready", |e| e["phase"] == "Ready");
    let warnings = |w: &GitHubWorld| {
        w.comments(&s.github, 13)
            .iter()
            .filter(|c| c.body.starts_with("⏳") && c.body.contains("will be deleted in"))
            .filter(|c| c.body.contains("idle for"))
            .count()
    };
    // Looking at the env (the polls above) is use, which moves the deadline: a warning per
    // deadline, then silence while nobody touches it.
    s.wait_for_world("a warning comment and the sticky line", |w| {
        warnings(w) >= 1
            && w.comments(&s.github, 13).iter().any(|c| {
                c.body.contains("<!-- slipway:env -->")
                    && c.body.contains("will be deleted at")
                    && c.body.contains("/slipway env pin")
            })
    });
    let said = warnings(&s.world);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        warnings(&s.world),
        said,
        "the same deadline is told once, however many resyncs pass"
    );

    // Pinning takes the deployer role: a maintainer's.
    s.world.set_permission(&s.github, "carol", "maintain");
    let pin = issue_comment_payload(&s.github, 13, "/slipway env pin", "carol");
    assert_eq!(s.send("issue_comment", "warn-2", &pin).0, 202);
    s.wait_for_world("the sticky comment without the warning", |w| {
        w.comments(&s.github, 13).iter().any(|c| {
            c.body.contains("<!-- slipway:env -->") && !c.body.contains("will be deleted at")
        })
    });
    assert_eq!(s.env_status(&env).unwrap()["phase"], "Ready");
    s.server.cli_json(&["down", &env, "--wait"]);
}
