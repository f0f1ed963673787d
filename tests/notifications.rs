//! Notifications end to end: a real `slipway serve` posts to a webhook receiver served on
//! loopback by this test. Each event reaches the sink exactly once: refused posts (500) are
//! retried until one is accepted, a `kill -9` and restart sends nothing again, a delivery
//! pending across a crash is made after the restart, and the routes' repo and event filters
//! hold.

mod harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use harness::*;
use serde_json::Value;

const LIGHT: &str = "services: { web: { image: slipway/demo-app:latest, ports: ['8080'] } }\n";
const REFUSED: &str = "services: { web: { image: slipway/demo-app:latest, privileged: true } }\n";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Post {
    /// The last path segment: which sink posted.
    sink: String,
    body: Value,
    accepted: bool,
}

#[derive(Default)]
struct Shared {
    /// Posts still to be refused with 500.
    refuse: AtomicUsize,
    posts: Mutex<Vec<Post>>,
}

/// A webhook receiver on loopback that records every post.
struct Receiver {
    base_url: String,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hooks/{sink}", post(receive))
            .with_state(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base_url: format!("http://{addr}/hooks"),
            shared,
            _runtime: runtime,
        }
    }

    fn refuse_next(&self, n: usize) {
        self.shared.refuse.store(n, Ordering::SeqCst);
    }

    fn posts(&self) -> Vec<Post> {
        self.shared.posts.lock().unwrap().clone()
    }

    /// Accepted posts of `sink` about `env`.
    fn delivered(&self, sink: &str, env: &str) -> Vec<Value> {
        self.posts()
            .into_iter()
            .filter(|p| p.accepted && p.sink == sink && p.body["slipway"]["env"] == env)
            .map(|p| p.body)
            .collect()
    }

    /// Waits until `check` holds for the posts so far.
    fn wait_for(&self, what: &str, server: &Server, check: impl Fn(&[Post]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check(&self.posts()) {
            assert!(
                Instant::now() < deadline,
                "never got {what}; posts: {:#?}\n{}",
                self.posts(),
                server.tail_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(sink): Path<String>,
    Json(body): Json<Value>,
) -> StatusCode {
    let refuse = shared
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    shared.posts.lock().unwrap().push(Post {
        sink,
        body,
        accepted: !refuse,
    });
    if refuse {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

fn events_of(posts: &[Value]) -> Vec<&str> {
    posts
        .iter()
        .map(|p| p["slipway"]["event"].as_str().unwrap_or_default())
        .collect()
}

/// Lines the log sink wrote for `event` of `env`, over every start of the server.
fn log_lines(server: &Server, event: &str, env: &str) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains("notification: ") && l.contains(event) && l.contains(env))
        .count()
}

#[test]
fn each_event_is_delivered_once_through_retries_and_restarts() {
    let receiver = Receiver::start();
    let name = unique_name("notif");
    let other = format!("{name}b");
    let repo = TestRepo::new();
    repo.write("compose.yml", LIGHT).commit("light");
    repo.checkout_new("broken");
    repo.write("compose.yml", REFUSED).commit("refused");
    let tables = format!(
        "[[repo]]\nname = \"{other}\"\nurl = \"{repo}\"\n\n\
         [[notify]]\nname = \"team\"\nkind = \"webhook\"\nurl = \"{base}/team\"\nrepos = [\"{name}\"]\n\
         events = [\"env.ready\", \"env.failed\", \"env.deleted\"]\n\n\
         [[notify]]\nname = \"elsewhere\"\nkind = \"webhook\"\nurl = \"{base}/elsewhere\"\nrepos = [\"{other}\"]\n\n\
         [[notify]]\nname = \"only-failures\"\nkind = \"webhook\"\nurl = \"{base}/only-failures\"\nevents = [\"env.failed\"]\n\n\
         [[notify]]\nname = \"server-log\"\nkind = \"log\"\n",
        repo = repo.path().display(),
        base = receiver.base_url,
    );
    let mut server = Server::start(ServerOptions {
        tables: &tables,
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });
    let env = format!("{name}-main");
    let broken = format!("{name}-broken");
    let _cleanup = (EnvCleanup(env.clone()), EnvCleanup(broken.clone()));

    // Ready: the first two posts are refused, the third gets through; one delivery.
    receiver.refuse_next(2);
    let ready = server.up_ready("main");
    let web = front_door_url_of(&ready);
    receiver.wait_for("env.ready", &server, |posts| {
        posts.iter().any(|p| p.accepted)
    });
    let team = receiver.delivered("team", &env);
    assert_eq!(events_of(&team), ["env.ready"]);
    let post = &team[0];
    assert_eq!(post["slipway"]["url"], web.as_str());
    assert_eq!(post["slipway"]["repo"], name.as_str());
    let text = post["text"].as_str().unwrap();
    assert!(text.contains(&env) && text.contains(&web), "{text}");
    let attempts = receiver.posts();
    assert_eq!(
        attempts.len(),
        3,
        "two refused, then accepted: {attempts:#?}"
    );
    assert!(attempts.iter().all(|p| p.sink == "team" && p.body == *post));
    assert!(
        server
            .log()
            .contains("notification not delivered; will retry"),
        "refusals are logged"
    );

    // kill -9 after the delivery and start again: nothing is sent twice.
    std::thread::sleep(Duration::from_millis(1500));
    server.kill9();
    server.spawn();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(receiver.posts().len(), 3, "{:#?}", receiver.posts());
    assert_eq!(log_lines(&server, "env.ready", &env), 1, "the log sink too");

    // A refused env: the reason goes to the team and to the failures-only sink.
    server.cli_json(&["up", "broken", "--repo", &name]);
    receiver.wait_for("env.failed twice", &server, |posts| {
        posts
            .iter()
            .filter(|p| p.accepted && p.body["slipway"]["event"] == "env.failed")
            .count()
            == 2
    });
    for sink in ["team", "only-failures"] {
        let failed = receiver.delivered(sink, &broken);
        assert_eq!(events_of(&failed), ["env.failed"], "{sink}");
        let text = failed[0]["text"].as_str().unwrap();
        assert!(text.contains("privileged"), "{text}");
    }

    // env down; the first post is refused, and the server dies before the retry: the
    // pending delivery is made after the restart, once.
    receiver.refuse_next(1);
    let before = receiver.posts().len();
    server.cli_json(&["down", &env, "--wait"]);
    receiver.wait_for("the refused env.deleted", &server, |posts| {
        posts.len() > before
    });
    server.kill9();
    server.spawn();
    receiver.wait_for("env.deleted", &server, |posts| {
        posts
            .iter()
            .any(|p| p.accepted && p.body["slipway"]["event"] == "env.deleted")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        events_of(&receiver.delivered("team", &env)),
        ["env.ready", "env.deleted"]
    );
    let deleted = &receiver.delivered("team", &env)[1];
    assert!(
        deleted["text"].as_str().unwrap().contains("Deleted"),
        "{deleted:#}"
    );

    // Nothing of this repo went to the other repo's sink; nothing but failures to the
    // failures-only sink.
    let posts = receiver.posts();
    assert!(posts.iter().all(|p| p.sink != "elsewhere"), "{posts:#?}");
    assert!(posts
        .iter()
        .filter(|p| p.sink == "only-failures")
        .all(|p| p.body["slipway"]["event"] == "env.failed"));
    assert_eq!(log_lines(&server, "env.deleted", &env), 1);
    assert_eq!(log_lines(&server, "env.ready", &env), 1);

    server.cli_json(&["down", &broken, "--wait"]);
}
