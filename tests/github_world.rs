//! Self-test of the GitHub world model in tests/harness/github.rs: every endpoint through a
//! plain HTTP client, the shapes through octocrab's typed models, and the webhook helpers
//! against a small local receiver that checks the signature.

mod harness;

use harness::github::*;
use serde_json::{json, Value};

const REPO: &str = "acme/shop";
const AUTH: (&str, &str) = ("Authorization", "Bearer ghs_anything");

fn call(world: &GitHubWorld, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    http_request(
        method,
        &format!("{}{path}", world.url()),
        &[AUTH, ("Accept", "application/vnd.github+json")],
        body.as_bytes(),
    )
}

fn world_with_pulls() -> GitHubWorld {
    let world = GitHubWorld::start();
    world.add_repo(REPO);
    world.set_permission(REPO, "alice", "maintain");
    for number in 1..=5 {
        world.add_pull(
            REPO,
            PullSpec {
                number,
                head_sha: format!("{number:040x}"),
                head_ref: format!("feature-{number}"),
                head_repo: if number == 5 {
                    "mallory/shop".into()
                } else {
                    REPO.into()
                },
                draft: number == 4,
                labels: vec!["preview".into()],
                state: "open".into(),
                author: "alice".into(),
            },
        );
    }
    world.close_pull(REPO, 3);
    world
}

#[test]
fn serves_every_endpoint() {
    let world = world_with_pulls();

    // Authentication is required.
    let r = http_request(
        "GET",
        &format!("{}/repos/{REPO}/pulls/1", world.url()),
        &[],
        b"",
    );
    assert_eq!(r.status, 401);

    // 1. Permissions: the legacy base role plus the real role name.
    let p = call(
        &world,
        "GET",
        "/repos/acme/shop/collaborators/alice/permission",
        None,
    )
    .json();
    assert_eq!(
        (p["permission"].as_str(), p["role_name"].as_str()),
        (Some("write"), Some("maintain"))
    );
    assert_eq!(p["user"]["login"], "alice");
    let p = call(
        &world,
        "GET",
        "/repos/acme/shop/collaborators/nobody/permission",
        None,
    )
    .json();
    assert_eq!(p["permission"], "none");
    world.set_permission(REPO, "ci[bot]", "admin");
    let p = call(
        &world,
        "GET",
        "/repos/acme/shop/collaborators/ci%5Bbot%5D/permission",
        None,
    );
    assert_eq!(p.json()["permission"], "admin");

    // 2. One pull request; 404 for an unknown one.
    world.set_pull_head(REPO, 2, &"ab".repeat(20));
    let pr = call(&world, "GET", "/repos/acme/shop/pulls/2", None).json();
    assert_eq!(pr["head"]["sha"], "ab".repeat(20));
    assert_eq!(pr["head"]["ref"], "feature-2");
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(pr["labels"][0]["name"], "preview");
    assert_eq!(pr["user"]["login"], "alice");
    let fork = call(&world, "GET", "/repos/acme/shop/pulls/5", None).json();
    assert_eq!(fork["head"]["repo"]["full_name"], "mallory/shop");
    assert_eq!(
        call(&world, "GET", "/repos/acme/shop/pulls/99", None).status,
        404
    );

    // 3. Open pull requests, paginated with a Link header.
    let page1 = call(
        &world,
        "GET",
        "/repos/acme/shop/pulls?state=open&per_page=3&page=1",
        None,
    );
    assert_eq!(page1.json().as_array().unwrap().len(), 3);
    assert!(page1.header("link").unwrap().contains("rel=\"next\""));
    let page2 = call(
        &world,
        "GET",
        "/repos/acme/shop/pulls?state=open&per_page=3&page=2",
        None,
    );
    let numbers: Vec<u64> = [page1.json(), page2.json()]
        .iter()
        .flat_map(|p| p.as_array().unwrap().clone())
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![5, 4, 2, 1], "open ones only, newest first");

    // 5, 4, 6. Comments: create, list, edit; 404 for an unknown one.
    let c = call(
        &world,
        "POST",
        "/repos/acme/shop/issues/1/comments",
        Some(json!({"body": "hi"})),
    );
    assert_eq!(c.status, 201);
    let id = c.json()["id"].as_u64().unwrap();
    assert_eq!(c.json()["user"]["login"], "slipway[bot]");
    let list = call(
        &world,
        "GET",
        "/repos/acme/shop/issues/1/comments?per_page=100&page=1",
        None,
    );
    assert_eq!(list.json()[0]["body"], "hi");
    let path = format!("/repos/acme/shop/issues/comments/{id}");
    let e = call(&world, "PATCH", &path, Some(json!({"body": "edited"})));
    assert_eq!((e.status, e.json()["body"].as_str()), (200, Some("edited")));
    let missing = call(
        &world,
        "PATCH",
        "/repos/acme/shop/issues/comments/1",
        Some(json!({"body": "x"})),
    );
    assert_eq!(missing.status, 404);
    assert_eq!(
        world.comments(REPO, 1),
        vec![Comment {
            id,
            body: "edited".into(),
            user: "slipway[bot]".into(),
            edits: 1
        }]
    );

    // 7, 8, 9. Deployments and their statuses.
    let sha = "1".repeat(40);
    let d = call(
        &world,
        "POST",
        "/repos/acme/shop/deployments",
        Some(
            json!({"ref": sha, "environment": "pr-1", "description": "preview", "auto_merge": false,
                    "required_contexts": [], "transient_environment": true,
                    "production_environment": false, "payload": {"env": "pr-1"}}),
        ),
    );
    assert_eq!(d.status, 201);
    let dep = d.json()["id"].as_u64().unwrap();
    assert_eq!(d.json()["sha"], sha);
    let statuses = format!("/repos/acme/shop/deployments/{dep}/statuses");
    let s = call(
        &world,
        "POST",
        &statuses,
        Some(json!({"state": "in_progress", "log_url": "http://log"})),
    );
    assert_eq!(s.status, 201);
    let s = call(
        &world,
        "POST",
        &statuses,
        Some(json!({"state": "success", "environment_url": "http://env", "auto_inactive": true})),
    );
    assert_eq!(s.json()["environment_url"], "http://env");
    let bad = call(&world, "POST", &statuses, Some(json!({"state": "done"})));
    assert_eq!(bad.status, 422);
    let unknown = call(
        &world,
        "POST",
        "/repos/acme/shop/deployments/1/statuses",
        Some(json!({"state": "success"})),
    );
    assert_eq!(unknown.status, 404);
    let listed = call(
        &world,
        "GET",
        "/repos/acme/shop/deployments?environment=pr-1",
        None,
    )
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let none = call(
        &world,
        "GET",
        "/repos/acme/shop/deployments?environment=pr-2",
        None,
    )
    .json();
    assert_eq!(none, json!([]));
    let deployments = world.deployments(REPO);
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0].environment, "pr-1");
    assert_eq!(
        deployments[0].statuses,
        vec![
            DeploymentStatus {
                state: "in_progress".into(),
                environment_url: None,
                log_url: Some("http://log".into())
            },
            DeploymentStatus {
                state: "success".into(),
                environment_url: Some("http://env".into()),
                log_url: None
            },
        ]
    );

    // 10. Commit statuses.
    let path = format!("/repos/acme/shop/statuses/{sha}");
    let st = call(
        &world,
        "POST",
        &path,
        Some(
            json!({"state": "pending", "context": "slipway/preview", "description": "building", "target_url": "http://x"}),
        ),
    );
    assert_eq!(st.status, 201);
    assert_eq!(
        call(&world, "POST", &path, Some(json!({"state": "in_progress"}))).status,
        422
    );
    assert_eq!(
        world.statuses(REPO, &sha),
        vec![CommitStatus {
            state: "pending".into(),
            context: "slipway/preview".into(),
            description: Some("building".into()),
            target_url: Some("http://x".into()),
        }]
    );

    // 11. App authentication.
    let inst = call(&world, "GET", "/repos/acme/shop/installation", None).json();
    assert_eq!(
        (inst["id"].as_u64(), inst["account"]["login"].as_str()),
        (Some(1), Some("acme"))
    );
    let token = call(
        &world,
        "POST",
        "/app/installations/1/access_tokens",
        Some(json!({})),
    );
    assert_eq!(
        (token.status, token.json()["token"].as_str()),
        (201, Some("ghs_testtoken"))
    );

    // Injected failures: 429 with retry-after, then 503, then normal again.
    world.fail_next(1, 429);
    let r = call(&world, "GET", "/repos/acme/shop/pulls/1", None);
    assert_eq!((r.status, r.header("retry-after")), (429, Some("0")));
    world.fail_next(2, 503);
    assert_eq!(
        call(&world, "GET", "/repos/acme/shop/pulls/1", None).status,
        503
    );
    assert_eq!(
        call(&world, "GET", "/repos/acme/shop/pulls/1", None).status,
        503
    );
    assert_eq!(
        call(&world, "GET", "/repos/acme/shop/pulls/1", None).status,
        200
    );

    // The log, and what matched no route.
    assert!(world
        .requests()
        .contains(&"GET /repos/acme/shop/pulls/2".to_string()));
    assert!(world
        .request_log()
        .iter()
        .any(|r| r.authorization.as_deref() == Some("Bearer ghs_anything")));
    assert_eq!(world.unexpected(), Vec::<String>::new());
    assert_eq!(
        call(&world, "DELETE", "/repos/acme/shop/pulls/1", None).status,
        404
    );
    assert_eq!(call(&world, "GET", "/user", None).status, 404);
    assert_eq!(
        world.unexpected(),
        vec!["DELETE /repos/acme/shop/pulls/1", "GET /user"]
    );
}

/// The JSON is complete enough for octocrab's typed models (what `slipway serve` uses).
#[test]
fn octocrab_reads_the_world() {
    use octocrab::models::repos::DeploymentStatusState;

    let world = world_with_pulls();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let gh = octocrab::Octocrab::builder()
            .base_uri(world.url())
            .unwrap()
            .personal_token("ghp_test".to_string())
            .build()
            .unwrap();

        let pr = gh.pulls("acme", "shop").get(5).await.unwrap();
        assert_eq!(
            pr.head.repo.as_ref().unwrap().full_name.as_deref(),
            Some("mallory/shop")
        );
        let page = gh
            .pulls("acme", "shop")
            .list()
            .state(octocrab::params::State::Open)
            .per_page(2)
            .send()
            .await
            .unwrap();
        let all = gh.all_pages(page).await.unwrap();
        assert_eq!(all.len(), 4);

        let comment = gh
            .issues("acme", "shop")
            .create_comment(1, "hello")
            .await
            .unwrap();
        gh.issues("acme", "shop")
            .update_comment(comment.id, "bye")
            .await
            .unwrap();
        let comments = gh
            .issues("acme", "shop")
            .list_comments(1)
            .send()
            .await
            .unwrap();
        assert_eq!(comments.items[0].body.as_deref(), Some("bye"));

        let repo = gh.repos("acme", "shop");
        let deployments = repo.deployments();
        let d = deployments
            .create("feature-1")
            .environment("pr-1")
            .transient_environment(true)
            .production_environment(false)
            .send()
            .await
            .unwrap();
        assert_eq!(d.sha, format!("{:040x}", 1));
        deployments
            .statuses(d.id)
            .create(DeploymentStatusState::Success)
            .environment_url("http://env")
            .send()
            .await
            .unwrap();
        let listed = deployments.list().environment("pr-1").send().await.unwrap();
        assert_eq!(listed.items.len(), 1);

        gh.repos("acme", "shop")
            .create_status("a".repeat(40), octocrab::models::StatusState::Success)
            .context("slipway/preview".to_string())
            .send()
            .await
            .unwrap();

        // octocrab's typed permission model only knows admin/maintain/push/pull/triage, while
        // GitHub answers the legacy admin/write/read/none: read it as JSON.
        let p: Value = gh
            .get(
                "/repos/acme/shop/collaborators/alice/permission",
                None::<&()>,
            )
            .await
            .unwrap();
        assert_eq!(p["role_name"], "maintain");

        let inst = gh
            .apps()
            .get_repository_installation("acme", "shop")
            .await
            .unwrap();
        assert_eq!(inst.account.login, "acme");
        let token: octocrab::models::InstallationToken = gh
            .post("/app/installations/1/access_tokens", None::<&()>)
            .await
            .unwrap();
        assert_eq!(token.token, "ghs_testtoken");

        // octocrab's default RetryConfig::Simple(3) retries 5xx and 429 by itself.
        world.fail_next(2, 502);
        gh.pulls("acme", "shop").get(1).await.unwrap();
        world.fail_next(1, 429);
        gh.pulls("acme", "shop").get(1).await.unwrap();
    });
    assert_eq!(world.unexpected(), Vec::<String>::new());
    assert_eq!(world.deployments(REPO)[0].statuses[0].state, "success");
}

#[test]
fn webhook_helpers_sign_and_payloads_point_at_the_test_repo() {
    use hmac::{Hmac, Mac};
    use std::sync::mpsc;

    // A tiny receiver that checks the signature the way a server must.
    let (tx, rx) = mpsc::channel::<(String, String, Value)>();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/webhooks/github",
                axum::routing::post(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                        let tx = tx.clone();
                        async move {
                            let h = |n: &str| {
                                headers
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string()
                            };
                            let Some(hex_sig) = h("x-hub-signature-256")
                                .strip_prefix("sha256=")
                                .map(str::to_string)
                            else {
                                return (
                                    axum::http::StatusCode::UNAUTHORIZED,
                                    "no signature".to_string(),
                                );
                            };
                            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
                            mac.update(&body);
                            let ok = hex::decode(hex_sig)
                                .is_ok_and(|sig| mac.verify_slice(&sig).is_ok());
                            if !ok {
                                return (
                                    axum::http::StatusCode::UNAUTHORIZED,
                                    "bad signature".to_string(),
                                );
                            }
                            let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
                                return (
                                    axum::http::StatusCode::BAD_REQUEST,
                                    "bad json".to_string(),
                                );
                            };
                            tx.send((h("x-github-event"), h("x-github-delivery"), payload))
                                .unwrap();
                            (axum::http::StatusCode::ACCEPTED, "queued".to_string())
                        }
                    },
                ),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });

    let pr = pull_request_payload(
        "synchronize",
        "acme/shop",
        "/tmp/shop.git",
        7,
        &"c".repeat(40),
        "feat",
        "fork/shop",
        "bob",
    );
    assert_eq!(
        send_webhook(&url, "s3cret", "pull_request", "d-1", &pr),
        (202, "queued".into())
    );
    let (event, delivery, got) = rx.recv().unwrap();
    assert_eq!((event.as_str(), delivery.as_str()), ("pull_request", "d-1"));
    assert_eq!(got["action"], "synchronize");
    assert_eq!(got["number"], 7);
    assert_eq!(got["pull_request"]["head"]["sha"], "c".repeat(40));
    assert_eq!(
        got["pull_request"]["head"]["repo"]["full_name"],
        "fork/shop"
    );
    assert_eq!(
        got["pull_request"]["base"]["repo"]["clone_url"],
        "/tmp/shop.git"
    );
    assert_eq!(got["repository"]["owner"]["login"], "acme");
    assert_eq!(got["sender"]["login"], "bob");

    // An action without its own example falls back to `opened`.
    let edited = pull_request_payload("edited", "acme/shop", "/x", 1, "s", "r", "acme/shop", "b");
    assert_eq!(edited["action"], "edited");
    let closed = pull_request_payload("closed", "acme/shop", "/x", 1, "s", "r", "acme/shop", "b");
    assert_eq!(closed["pull_request"]["state"], "closed");

    let c = issue_comment_payload("acme/shop", 7, "/slipway deploy", "alice");
    assert!(c["issue"]["pull_request"]["url"].is_string());
    assert_eq!(
        (c["issue"]["number"].as_u64(), c["comment"]["body"].as_str()),
        (Some(7), Some("/slipway deploy"))
    );
    assert_eq!(
        send_webhook(&url, "s3cret", "issue_comment", "d-2", &c).0,
        202
    );
    assert_eq!(rx.recv().unwrap().2["comment"]["user"]["login"], "alice");

    // Negative cases through send_raw.
    let body = serde_json::to_vec(&c).unwrap();
    assert_eq!(
        send_raw(&url, &[("X-GitHub-Event", "issue_comment")], &body).0,
        401
    );
    let wrong = signature("other", &body);
    assert_eq!(
        send_raw(&url, &[("X-Hub-Signature-256", &wrong)], &body).0,
        401
    );
    let truncated = &body[..body.len() / 2];
    let sig = signature("s3cret", truncated);
    assert_eq!(
        send_raw(&url, &[("X-Hub-Signature-256", &sig)], truncated).0,
        400
    );
    assert!(fixture("ping/payload.json")["zen"].is_string());
}
