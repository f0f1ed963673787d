//! Permissions and the audit log, in-process: commands given through the CLI land in the
//! audit log (`GET /api/v1/audit`, newest first) with who, where, what and the outcome, and
//! a command the caller's role may not run is refused with the role it needs, does nothing
//! and is audited as refused.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::github::*;
use crate::harness::*;
use crate::support::InProcessServer;

const LIGHT: &str = "services: { web: { image: slipway/demo-app:latest, ports: ['8080'] } }\n";

fn light_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("compose.yml", LIGHT).commit("light");
    repo
}

/// The newest audit entries.
fn audit(server: &InProcessServer, query: &str) -> Vec<Value> {
    let (status, body) = http_get(&format!("{}/api/v1/audit{query}", server.url));
    assert_eq!(status, 200, "{body}");
    let entries: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    entries.as_array().expect("an array").clone()
}

#[test]
fn cli_commands_are_audited_newest_first() {
    let name = unique_name("audit");
    let repo = light_repo();
    let server = InProcessServer::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let env = format!("{name}-main");
    assert!(
        audit(&server, "").is_empty(),
        "a fresh server has no entries"
    );

    let record = server.cli_json(&["up", "main", "--repo", &name]);
    assert_eq!(record["name"], env.as_str());
    let entries = audit(&server, "?limit=10");
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let up = &entries[0];
    assert_eq!(up["outcome"], "ok", "{up:#}");
    assert_eq!(up["command"], format!("env up main repo:{name}").as_str());
    assert_eq!(up["surface"], "cli");
    assert_eq!(up["place"], "api");
    assert!(up["actor"].as_str().unwrap().starts_with("api:"), "{up:#}");
    assert!(up["at"].as_i64().unwrap() > 0);

    // Every command is audited, reads too; a failing command is audited with its error.
    server.cli_json(&["list"]);
    let missing = server.cli(&["down", &format!("{name}-nothing")]);
    assert!(!missing.status.success());
    server.cli_json(&["down", &env, "--wait"]);

    let entries = audit(&server, "");
    let summary: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["command"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 4, "{summary:#?}");
    assert_eq!(summary[0], (format!("env down {env}"), "ok".to_string()));
    assert_eq!(summary[1].0, format!("env down {name}-nothing"));
    assert!(summary[1].1.starts_with("error: "), "{summary:#?}");
    assert_eq!(summary[2], ("env list".to_string(), "ok".to_string()));
    assert_eq!(summary[3].0, format!("env up main repo:{name}"));

    // Paging: `limit`, then `before` the oldest entry seen.
    let newest = audit(&server, "?limit=1");
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0]["id"], entries[0]["id"]);
    let older = audit(
        &server,
        &format!("?limit=5&before={}", entries[2]["id"].as_i64().unwrap()),
    );
    assert_eq!(older.len(), 1);
    assert_eq!(older[0]["id"], entries[3]["id"]);
}

#[test]
fn a_refused_command_names_the_role_it_needs_and_does_nothing() {
    let name = unique_name("deny");
    let repo = light_repo();
    let server = InProcessServer::start(ServerOptions {
        tables: "[permissions]\napi_token_role = \"viewer\"\n",
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });

    let out = server.cli(&["up", "main", "--repo", &name]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`env up` needs the developer role; you have viewer."),
        "{stderr}"
    );

    let listed = server.cli_json(&["list", "--all"]);
    assert!(
        listed.as_array().unwrap().is_empty(),
        "a refused command does nothing: {listed:#}"
    );
    let entries = audit(&server, "");
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[0]["command"], "env list --all");
    assert_eq!(entries[0]["outcome"], "ok");
    assert_eq!(
        entries[1]["command"],
        format!("env up main repo:{name}").as_str()
    );
    assert_eq!(
        entries[1]["outcome"],
        "refused: `env up` needs the developer role; you have viewer."
    );
}

/// `POST /api/v1/commands` takes every command of the grammar in the three forms the
/// surfaces use (a line of text, the CLI's words, a name with named options) and answers
/// with the canonical command and its typed outcome.
#[test]
fn the_http_api_runs_any_command_of_the_grammar() {
    let name = unique_name("apicmd");
    let repo = light_repo();
    let server = InProcessServer::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let env = format!("{name}-main");
    let url = format!("{}/api/v1/commands", server.url);
    let post = |body: Value| {
        let (status, text) = http_post_json(&url, &body);
        let parsed: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {status} {text}"));
        (status, parsed)
    };

    // A typo: the grammar's did-you-mean and the usage, written the CLI's way.
    let (status, typo) = post(json!({ "command": "env lst" }));
    assert_eq!(status, 400, "{typo:#}");
    assert!(
        typo["error"]
            .as_str()
            .unwrap()
            .contains("Did you mean `env list`?"),
        "{typo:#}"
    );
    assert!(
        typo["help"].as_str().unwrap().contains("slipway env list"),
        "{typo:#}"
    );

    // Named options, as from a Discord slash command.
    let (status, up) = post(json!({
        "name": "env up",
        "options": { "branch": "main", "repo": name, "ttl": "2h" },
    }));
    assert_eq!(status, 202, "{up:#}");
    assert_eq!(
        up["command"],
        format!("env up main repo:{name} ttl:2h").as_str()
    );
    assert_eq!(up["outcome"]["kind"], "env_up");
    assert_eq!(up["outcome"]["env"]["name"], env.as_str());

    // Words, as the CLI sends them.
    let (status, extended) = post(json!({ "args": ["env", "extend", env, "--by", "1h"] }));
    assert_eq!(status, 200, "{extended:#}");
    assert_eq!(extended["outcome"]["kind"], "env_extend");

    // A line of text.
    let (status, shown) = post(json!({ "command": format!("env status {env}") }));
    assert_eq!(status, 200, "{shown:#}");
    assert_eq!(shown["outcome"]["kind"], "env_status");
    assert_eq!(shown["outcome"]["status"]["name"], env.as_str());

    // What only a pull request can fill in must be given here.
    let (status, missing) = post(json!({ "command": "env status" }));
    assert_eq!(status, 400, "{missing:#}");
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("`env status` needs the environment here: `slipway env status <env>`"),
        "{missing:#}"
    );
    let (status, both) = post(json!({ "command": "env list", "args": ["env", "list"] }));
    assert_eq!(status, 400, "{both:#}");

    let (status, down) = post(json!({ "command": format!("env down {env}") }));
    assert_eq!(status, 202, "{down:#}");
    assert_eq!(down["outcome"]["kind"], "env_down");

    let commands: Vec<(String, String)> = audit(&server, "")
        .iter()
        .map(|e| {
            (
                e["command"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ok = |command: String| (command, "ok".to_string());
    assert_eq!(commands[0], ok(format!("env down {env}")));
    assert!(commands[1].0 == "env status" && commands[1].1.starts_with("error: "));
    assert_eq!(commands[2], ok(format!("env status {env}")));
    assert_eq!(commands[3], ok(format!("env extend {env} by:1h")));
    assert_eq!(commands[4], ok(format!("env up main repo:{name} ttl:2h")));
    assert!(
        commands[5].0 == "(not understood)" && commands[5].1.contains("Unknown command"),
        "{commands:#?}"
    );
    assert_eq!(commands.len(), 6, "{commands:#?}");
}

#[test]
fn pull_request_commands_are_audited_with_the_commenter_and_the_pull_request() {
    const SECRET: &str = "webhook-secret-for-audit";
    let name = unique_name("ghaudit");
    let github = format!("acme/{name}");
    let world = GitHubWorld::start();
    world.add_repo(&github);
    world.set_permission(&github, "alice", "write");
    world.set_permission(&github, "bob", "read");
    world.set_permission(&github, "eve", "none");
    let repo = light_repo();
    // A closed pull request: comments land on it, and no env is made for it.
    let sha = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    world.add_pull(
        &github,
        PullSpec {
            state: "closed".into(),
            ..PullSpec::new(7, &sha, "feature", &github, "alice")
        },
    );
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"ghp_testtoken\"\n",
        world.url()
    );
    let repo_extra = format!("github = \"{github}\"\n");
    let server = InProcessServer::start(ServerOptions {
        repo_extra: &repo_extra,
        tables: &tables,
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });

    let comments = [
        ("bob", "/slipway env down"),
        ("eve", "/slipway env status"),
        ("eve", "/slipway whoami"),
        ("alice", "/slipway whoami"),
        ("alice", "/slipway evn status"),
    ];
    for (i, (user, body)) in comments.iter().enumerate() {
        let payload = issue_comment_payload(&github, 7, body, user);
        let (status, answer) = send_webhook(
            &server.url,
            SECRET,
            "issue_comment",
            &format!("c-{i}"),
            &payload,
        );
        assert_eq!(status, 202, "{answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let entries = loop {
        let entries = audit(&server, "");
        if entries.len() >= comments.len() {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "only {entries:#?}\n{}",
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let place = format!("pr {github}#7");
    assert!(entries
        .iter()
        .all(|e| e["surface"] == "github" && e["place"] == place.as_str()));
    // Oldest first, as the comments were handled.
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["command"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen[0],
        (
            "github:bob",
            "env down",
            "refused: `env down` needs the developer role; you have viewer."
        )
    );
    assert_eq!(
        seen[1],
        (
            "github:eve",
            "env status",
            "refused: `env status` needs the viewer role; you have no role."
        )
    );
    assert_eq!(seen[2], ("github:eve", "whoami", "ok"));
    assert_eq!(seen[3], ("github:alice", "whoami", "ok"));
    assert_eq!(seen[4].0, "github:alice");
    assert!(seen[4].2.starts_with("error: Unknown command"), "{seen:#?}");

    // The replies say what is needed and what they have.
    let replies = world.comments(&github, 7);
    let to_bob = replies
        .iter()
        .find(|c| c.body.starts_with("@bob"))
        .expect("a reply to bob");
    assert!(
        to_bob
            .body
            .contains("`env down` needs the developer role (GitHub write permission)"),
        "{}",
        to_bob.body
    );
    assert!(to_bob.body.contains("Nothing was done."), "{}", to_bob.body);
    let to_alice = replies
        .iter()
        .find(|c| c.body.starts_with("@alice you have write permission"))
        .expect("alice's whoami");
    assert!(
        to_alice.body.contains("the developer role") && to_alice.body.contains("`env up`"),
        "{}",
        to_alice.body
    );
    let to_eve = replies
        .iter()
        .find(|c| c.body.starts_with("@eve you have none permission"))
        .expect("eve's whoami");
    assert!(
        to_eve.body.contains("you may run `help`, `whoami`."),
        "{}",
        to_eve.body
    );
}
