//! Two `slipway serve` replicas on one Postgres, behind one GitHub: every webhook delivery
//! is sent to both (as a load balancer retrying, or two ingress paths, would), and both are
//! nudged to handle it at once. Each delivery must be handled exactly once, one pull
//! request's deliveries in the order they came, each PR's sticky comment made once; and
//! when one replica is killed the other carries on.

mod harness;
#[path = "../envmgr/tests/support/postgres.rs"]
#[allow(dead_code)] // shared with envmgr's tests, which use all of it
mod postgres;

use std::time::{Duration, Instant};

use harness::github::*;
use harness::*;
use postgres::TestPostgres;
use serde_json::Value;

const SECRET: &str = "webhook-secret-for-replicas";
const COMPOSE: &str =
    "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n";
/// Commands per pull request, each in its own comment: unknown ones, so each reply names
/// exactly its command and nothing runs.
const COMMANDS: usize = 4;

fn command(number: u64, i: usize) -> String {
    format!("zorp{number}x{i}")
}

/// Sends one delivery to both replicas at the same moment: one stores it (`202`), the other
/// finds it stored (`200`).
fn send_to_both(servers: &[&Server], event: &str, delivery: &str, payload: &Value) {
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let sends: Vec<_> = servers
            .iter()
            .map(|server| {
                scope.spawn(|| send_webhook(&server.url, SECRET, event, delivery, payload).0)
            })
            .collect();
        sends.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 202], "delivery {delivery}: {statuses:?}");
}

/// How many times the replicas' logs say delivery `id` was handled.
fn times_handled(servers: &[&Server], id: &str) -> usize {
    let needle = format!("delivery={id} ");
    servers
        .iter()
        .map(|s| {
            without_colours(&s.log())
                .lines()
                .filter(|l| l.contains("webhook handled") && l.contains(&needle))
                .count()
        })
        .sum()
}

/// The log without its terminal colour codes (`ESC [ ... m`).
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn wait_for(what: &str, servers: &[&Server], mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "never saw {what}\n--- replica a ---\n{}\n--- replica b ---\n{}",
            servers[0].tail_log(),
            servers.get(1).map(|s| s.tail_log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The bodies of the replies to our unknown commands on PR `number`, oldest first.
fn replies(world: &GitHubWorld, github: &str, number: u64) -> Vec<String> {
    let mut comments = world.comments(github, number);
    comments.sort_by_key(|c| c.id);
    comments
        .into_iter()
        .map(|c| c.body)
        .filter(|b| b.starts_with("Unknown command"))
        .collect()
}

#[test]
fn two_replicas_handle_each_delivery_once_and_each_pull_requests_in_order() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(pg) = runtime.block_on(TestPostgres::start()) else {
        return;
    };
    let name = unique_name("ghr");
    let github = format!("acme/{name}");
    let world = GitHubWorld::start();
    world.add_repo(&github);
    world.set_permission(&github, "alice", "write");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE);
    repo.commit("base");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("greeting.txt", "hello");
    let sha = repo.commit("feature");

    let extra = format!("database_url = \"{}\"\nlease_ttl = \"3s\"\n", pg.url());
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"ghp_testtoken\"\nresync_interval = \"1h\"\n",
        world.url()
    );
    let repo_extra = format!("github = \"{github}\"\n");
    let options = || ServerOptions {
        repo_name: &name,
        repo_url: repo.path(),
        env_file: "compose.yml",
        extra: &extra,
        repo_extra: &repo_extra,
        tables: &tables,
    };
    let mut a = Server::start(options());
    let b = Server::start(options());

    let prs = [1u64, 2];
    let envs: Vec<EnvCleanup> = prs
        .iter()
        .map(|n| EnvCleanup(format!("{name}-pr-{n}")))
        .collect();
    let clone_url = repo.path().display().to_string();
    for &n in &prs {
        repo.git(&["update-ref", &format!("refs/pull/{n}/head"), &sha]);
        world.add_pull(&github, PullSpec::new(n, &sha, "feature", &github, "alice"));
    }

    // Each PR opened, then commented on; the PRs' deliveries interleaved.
    let mut deliveries = Vec::new();
    for &n in &prs {
        let payload = pull_request_payload(
            "opened", &github, &clone_url, n, &sha, "feature", &github, "alice",
        );
        deliveries.push((n, 0, "pull_request", format!("rep-{n}-0"), payload));
    }
    for i in 1..=COMMANDS {
        for &n in &prs {
            let body = format!("/slipway {}", command(n, i));
            let payload = issue_comment_payload(&github, n, &body, "alice");
            deliveries.push((n, i, "issue_comment", format!("rep-{n}-{i}"), payload));
        }
    }
    let both = [&a, &b];
    for (_, _, event, id, payload) in &deliveries {
        send_to_both(&both, event, id, payload);
    }

    for &n in &prs {
        wait_for(&format!("the {COMMANDS} replies on #{n}"), &both, || {
            replies(&world, &github, n).len() >= COMMANDS
        });
    }
    for &n in &prs {
        let env = format!("{name}-pr-{n}");
        wait_for(&format!("{env} Ready"), &both, || {
            let out = a.cli(&["status", &env, "--json"]);
            out.status.success()
                && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|s| s["phase"] == "Ready")
        });
        wait_for(
            &format!("the sticky comment of #{n} saying Ready"),
            &both,
            || {
                world
                    .comments(&github, n)
                    .iter()
                    .any(|c| c.body.contains("<!-- slipway:env -->") && c.body.contains("Ready"))
            },
        );
    }
    // Longer than a resync (2s) and a lease (3s): whatever was going to repeat has.
    std::thread::sleep(Duration::from_secs(5));

    for (n, i, _, id, _) in &deliveries {
        assert_eq!(
            times_handled(&both, id),
            1,
            "delivery {id} (#{n}, step {i}) must be handled exactly once\n--- a ---\n{}\n--- b ---\n{}",
            a.tail_log(),
            b.tail_log()
        );
    }
    for &n in &prs {
        // One reply per command, in the order the commands came.
        let expected: Vec<String> = (1..=COMMANDS).map(|i| command(n, i)).collect();
        let got: Vec<String> = replies(&world, &github, n)
            .iter()
            .map(|body| {
                expected
                    .iter()
                    .find(|c| body.contains(&format!("`{c}`")))
                    .cloned()
                    .unwrap_or_else(|| panic!("a reply to no command of #{n}: {body}"))
            })
            .collect();
        assert_eq!(got, expected, "replies on #{n}");
        let sticky: Vec<_> = world
            .comments(&github, n)
            .into_iter()
            .filter(|c| c.body.contains("<!-- slipway:env -->"))
            .collect();
        assert_eq!(sticky.len(), 1, "one sticky comment on #{n}: {sticky:#?}");
        let env = format!("{name}-pr-{n}");
        let deployments: Vec<_> = world
            .deployments(&github)
            .into_iter()
            .filter(|d| d.environment == env)
            .collect();
        assert_eq!(
            deployments.len(),
            1,
            "one deployment of {env}: {deployments:#?}"
        );
        assert_eq!(a.status(&env)["generation"], 1, "{env} asked for once");
    }

    // Replica a dies (kill -9, maybe holding leases): b handles what comes next, alone.
    a.kill9();
    let body = format!("/slipway {}", command(1, COMMANDS + 1));
    let payload = issue_comment_payload(&github, 1, &body, "alice");
    let (status, _) = send_webhook(&b.url, SECRET, "issue_comment", "rep-after-kill", &payload);
    assert_eq!(status, 202);
    wait_for("the reply from the surviving replica", &[&b], || {
        replies(&world, &github, 1)
            .iter()
            .any(|r| r.contains(&format!("`{}`", command(1, COMMANDS + 1))))
    });
    assert_eq!(times_handled(&[&b], "rep-after-kill"), 1);

    for env in &envs {
        b.cli_json(&["down", &env.0, "--wait"]);
    }
    assert!(
        world.unexpected().is_empty(),
        "unexpected API calls: {:?}",
        world.unexpected()
    );
    drop(envs);
    drop(b);
    drop(a);
    drop(pg);
}
