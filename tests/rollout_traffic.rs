//! The front door's traffic split during a rollout, end to end in one process: Slipway runs
//! in-process with its real front door and a real SQLite store, on the runtime's test twin
//! whose containers report 127.0.0.1; the release env (`<repo>-blue`) and the canary env
//! (`<repo>-green`) are real envs brought up with `slipway env up`, and their `web`
//! services are two HTTP servers of this test on loopback (the compose files publish the
//! ports they listen on). The rollout is a `rollouts` row the test writes with SQL, as the
//! rollout reconciler would, and the measurements are read back with
//! `Store::traffic_window`, as the analysis reads them.

#[path = "harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envmgr::store::{Store, TrafficWindow};
use harness::{last_lines, unique_name, ServerOptions, SlipwayApi, TestRepo};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use slipway::testing::TestApp;
use tokio::sync::watch;

/// One version's `web` service: answers its name, or 500 when told to fail; can be stopped
/// (listener closed, open connections cut), after which connections are refused.
struct StandIn {
    port: u16,
    failing: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
}

impl StandIn {
    fn start(runtime: &tokio::runtime::Runtime, name: &'static str) -> Self {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let failing = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = watch::channel(false);
        let fail = failing.clone();
        runtime.spawn(async move {
            let mut accept_stopped = stopped.clone();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = accept_stopped.wait_for(|stop| *stop) => return,
                };
                let fail = fail.clone();
                let mut connection_stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let fail = fail.load(Ordering::SeqCst);
                        async move {
                            // What the front door is meant to keep to itself.
                            let leaked = req.headers().contains_key("x-slipway-version");
                            let _ = req.into_body().collect().await;
                            let mut response = Response::new(Full::new(Bytes::from(format!(
                                "{name}{}",
                                if leaked {
                                    " (saw x-slipway-version)"
                                } else {
                                    ""
                                }
                            ))));
                            if fail {
                                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = connection_stopped.wait_for(|stop| *stop) => {}
                    }
                });
            }
        });
        Self {
            port,
            failing,
            stop,
        }
    }

    fn compose(&self) -> String {
        format!(
            "services:\n  web:\n    image: stand-in\n    ports: ['{}']\n",
            self.port
        )
    }
}

/// What one request through the front door got.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `X-Slipway-Version` of the answer.
    version: Option<String>,
    body: String,
}

/// Slipway with its front door, the two envs up on their stand-ins, and the store.
struct World {
    app: TestApp,
    front_door: SocketAddr,
    host: String,
    repo: String,
    release_env: String,
    canary_env: String,
    /// Held, not read: dropping a stand-in stops it.
    _stable: StandIn,
    canary: StandIn,
    /// The test's own tokio runtime: the stand-ins, the store and the SQL writes.
    runtime: tokio::runtime::Runtime,
    store: Store,
    db: sqlx::SqlitePool,
    _repo: TestRepo,
    _data_dir: tempfile::TempDir,
}

impl SlipwayApi for World {
    fn url(&self) -> &str {
        self.app.url()
    }
    fn repo(&self) -> &str {
        &self.repo
    }
    fn tail_log(&self) -> String {
        last_lines(&self.app.log(), 60)
    }
}

impl World {
    fn start(prefix: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let stable = StandIn::start(&runtime, "stable");
        let canary = StandIn::start(&runtime, "canary");
        let name = unique_name(prefix);
        let repo = TestRepo::new();
        repo.write("compose.yml", &stable.compose()).commit("main");
        repo.checkout_new("blue");
        repo.write("compose.yml", &stable.compose())
            .commit("stable version");
        repo.checkout_new("green");
        repo.write("compose.yml", &canary.compose())
            .commit("canary version");
        let data_dir = tempfile::tempdir().unwrap();
        // The row the test writes is a paused rollout of a configured channel: the rollout
        // reconciler holds it as it is, so the weights the test sets are the ones applied.
        let options = ServerOptions {
            repo_extra: "[[repo.channel]]\nname = \"staging\"\n",
            ..ServerOptions::basic(&name, repo.path(), "compose.yml")
        };
        let app = TestApp::start_with_front_door(&options.config(data_dir.path()))
            .unwrap_or_else(|e| panic!("the in-process Slipway did not start: {e:#}"));
        let front_door: SocketAddr = app
            .front_door_url()
            .expect("started with its front door")
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let url = format!("sqlite://{}", data_dir.path().join("slipway.db").display());
        let store = runtime.block_on(Store::connect(&url)).unwrap();
        let db = runtime.block_on(sqlx::SqlitePool::connect(&url)).unwrap();
        let world = Self {
            host: format!("{name}-blue.localhost"),
            release_env: format!("{name}-blue"),
            canary_env: format!("{name}-green"),
            repo: name,
            app,
            front_door,
            _stable: stable,
            canary,
            runtime,
            store,
            db,
            _repo: repo,
            _data_dir: data_dir,
        };
        world.up_ready("blue");
        world.up_ready("green");
        world
    }

    /// Starts a rollout of the canary env into the release env at `weight` (per mille).
    /// Returns its id and the version that served the first request under it (which is
    /// measured).
    fn start_rollout(&self, weight: u16) -> (i64, String) {
        let id: i64 = self
            .runtime
            .block_on(
                sqlx::query_scalar(
                    "INSERT INTO rollouts (repo, channel, release_env, canary_env, from_commit, \
                     to_commit, source, state, step, canary_weight, paused, requested_by, \
                     created_at, updated_at) \
                     VALUES (?, 'staging', ?, ?, ?, ?, 'test', 'progressing', 0, ?, 1, 'test', 0, 0) \
                     RETURNING id",
                )
                .bind(&self.repo)
                .bind(&self.release_env)
                .bind(&self.canary_env)
                .bind("76543210fedcba9876543210fedcba9876543210")
                .bind("0123456789abcdef0123456789abcdef01234567")
                .bind(i64::from(weight))
                .fetch_one(&self.db),
            )
            .unwrap();
        // Applied once answers say which version served them.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let answer = self.get(&[]);
            if let Some(version) = answer.version {
                return (id, version);
            }
            assert!(Instant::now() < deadline, "the split never applied");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn set_weight(&self, rollout: i64, weight: u16) {
        self.runtime
            .block_on(
                sqlx::query("UPDATE rollouts SET canary_weight = ? WHERE id = ?")
                    .bind(i64::from(weight))
                    .bind(rollout)
                    .execute(&self.db),
            )
            .unwrap();
    }

    /// Everything measured for `rollout` so far, once the front door has flushed (it writes
    /// twice a second).
    fn measured(&self, rollout: i64) -> TrafficWindow {
        std::thread::sleep(Duration::from_millis(1200));
        self.runtime
            .block_on(self.store.traffic_window(rollout, 0))
            .unwrap()
    }

    /// `GET /` of the release env through the front door, with these extra headers.
    fn get(&self, headers: &[(&str, &str)]) -> Answer {
        self.request("GET", headers, "")
    }

    fn request(&self, method: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut stream = std::net::TcpStream::connect(self.front_door).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut text = format!(
            "{method} / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(body);
        stream.write_all(text.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let version = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-slipway-version")
                .then(|| value.trim().to_string())
        });
        Answer {
            status,
            version,
            body: body.to_string(),
        }
    }

    /// `count` GETs; each must be answered by the version its header names. Returns how
    /// many the canary served.
    fn canary_share(&self, count: usize) -> usize {
        let mut canaries = 0;
        for _ in 0..count {
            let answer = self.get(&[]);
            assert_eq!(answer.status, 200, "{answer:?}\n{}", self.tail_log());
            let version = answer.version.as_deref().expect("a version header");
            assert_eq!(answer.body, version, "{answer:?}");
            canaries += usize::from(version == "canary");
        }
        canaries
    }
}

/// Whether `got` of `n` draws at probability `p` is within five standard deviations.
fn binomial_ok(got: usize, n: usize, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (got as f64 - mean).abs() <= 5.0 * sd
}

#[test]
fn shares_follow_the_weight_sticky_clients_stay_and_weight_0_stops_the_canary_within_1s() {
    let world = World::start("rtw");
    let (rollout, first) = world.start_rollout(250);

    // Shares: 2,000 unpinned requests at 25%.
    let mut counted = HashMap::from([("stable", 0usize), ("canary", 0usize)]);
    *counted.get_mut(first.as_str()).unwrap() += 1;
    let canaries = world.canary_share(2000);
    assert!(
        binomial_ok(canaries, 2000, 0.25),
        "{canaries} of 2000 on the canary at 25%"
    );
    *counted.get_mut("canary").unwrap() += canaries;
    *counted.get_mut("stable").unwrap() += 2000 - canaries;

    // Sticky clients (header or cookie) keep one version per weight, and those on the
    // canary at 25% are still there at 50%.
    let clients: Vec<(String, &str)> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                (format!("client-{i}"), "x-slipway-sticky")
            } else {
                (format!("slipway_sticky=client-{i}; theme=dark"), "cookie")
            }
        })
        .collect();
    let versions_of = |counted: &mut HashMap<&str, usize>| -> Vec<String> {
        clients
            .iter()
            .map(|(value, header)| {
                let answers: Vec<String> = (0..3)
                    .map(|_| {
                        let answer = world.get(&[(header, value)]);
                        assert_eq!(answer.status, 200, "{answer:?}");
                        answer.body
                    })
                    .collect();
                assert!(
                    answers.iter().all(|a| *a == answers[0]),
                    "{header}: {value} moved between versions: {answers:?}"
                );
                *counted.get_mut(answers[0].as_str()).unwrap() += 3;
                answers[0].clone()
            })
            .collect()
    };
    let at_quarter = versions_of(&mut counted);
    let on_canary = at_quarter.iter().filter(|v| *v == "canary").count();
    assert!(binomial_ok(on_canary, 200, 0.25), "{on_canary} of 200");
    world.set_weight(rollout, 500);
    std::thread::sleep(Duration::from_secs(1));
    let at_half = versions_of(&mut counted);
    for (i, (before, after)) in at_quarter.iter().zip(&at_half).enumerate() {
        assert!(
            before == "stable" || after == "canary",
            "client {i} left the canary when the weight grew"
        );
    }
    let on_canary = at_half.iter().filter(|v| *v == "canary").count();
    assert!(binomial_ok(on_canary, 200, 0.5), "{on_canary} of 200");

    // Every request that was not forced is measured, under the version that served it.
    let window = world.measured(rollout);
    assert_eq!(
        window.canary.requests as usize, counted["canary"],
        "{window:?}"
    );
    assert_eq!(
        window.stable.requests as usize, counted["stable"],
        "{window:?}"
    );
    assert_eq!(window.canary.errors + window.stable.errors, 0);
    assert_eq!(window.canary.latency.count(), window.canary.requests);
    let metrics = harness::http_get(&format!("{}/metrics", world.app.url())).1;
    let line = format!(
        "slipway_proxy_version_requests_total{{env=\"{}\",version=\"canary\",class=\"2xx\"}} {}",
        world.release_env, counted["canary"]
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");

    // Weight 0: no canary answer later than 1 s after the write.
    world.set_weight(rollout, 0);
    let written = Instant::now();
    let mut last_canary = None;
    while written.elapsed() < Duration::from_secs(2) {
        let answer = world.get(&[]);
        assert_eq!(answer.status, 200);
        if answer.body == "canary" {
            last_canary = Some(written.elapsed());
        }
        *counted.get_mut(answer.body.as_str()).unwrap() += 1;
    }
    eprintln!("last canary answer {last_canary:?} after the weight went to 0");
    assert!(
        last_canary.is_none_or(|at| at < Duration::from_secs(1)),
        "the canary still served {last_canary:?} after weight 0"
    );
    assert_eq!(world.canary_share(200), 0);
    *counted.get_mut("stable").unwrap() += 200;

    // Forcing: served by the version asked for, at weight 0 too, the header not passed on,
    // and not counted.
    for asked in ["canary", "stable"] {
        for _ in 0..20 {
            let answer = world.get(&[("X-Slipway-Version", asked)]);
            assert_eq!(answer.body, asked, "{answer:?}");
            assert_eq!(answer.version.as_deref(), Some(asked));
        }
    }
    let window = world.measured(rollout);
    assert_eq!(
        window.canary.requests as usize, counted["canary"],
        "{window:?}"
    );
    assert_eq!(
        window.stable.requests as usize, counted["stable"],
        "{window:?}"
    );
}

#[test]
fn canary_errors_are_counted_and_a_dead_canary_leaves_gets_to_stable() {
    let world = World::start("rte");
    let (rollout, first) = world.start_rollout(500);

    // A canary answering 500: its answers reach the client and count as its errors.
    world.canary.failing.store(true, Ordering::SeqCst);
    let mut canary_errors = 0;
    let mut stable_answers = usize::from(first == "stable");
    for _ in 0..400 {
        let answer = world.get(&[]);
        match answer.version.as_deref() {
            Some("canary") => {
                assert_eq!(answer.status, 500, "{answer:?}");
                canary_errors += 1;
            }
            _ => {
                assert_eq!(answer.status, 200, "{answer:?}");
                stable_answers += 1;
            }
        }
    }
    assert!(binomial_ok(canary_errors, 400, 0.5), "{canary_errors}");
    let canary_requests = canary_errors + usize::from(first == "canary");
    let window = world.measured(rollout);
    assert_eq!(window.canary.requests, canary_requests as u64, "{window:?}");
    assert_eq!(window.canary.errors, canary_errors as u64, "{window:?}");
    assert_eq!(window.stable.requests, stable_answers as u64, "{window:?}");
    assert_eq!(window.stable.errors, 0, "{window:?}");

    // The canary dies: every GET still gets stable's answer (retried there once), and each
    // one the canary was picked for counts as a canary error.
    let _ = world.canary.stop.send(true);
    std::thread::sleep(Duration::from_millis(200));
    let before = window;
    for _ in 0..200 {
        let answer = world.get(&[]);
        assert_eq!(answer.status, 200, "{answer:?}\n{}", world.tail_log());
        assert_eq!(answer.body, "stable");
        assert_eq!(answer.version.as_deref(), Some("stable"));
    }
    let after = world.measured(rollout);
    let failed = after.canary.requests - before.canary.requests;
    assert_eq!(
        after.canary.errors - before.canary.errors,
        failed,
        "{after:?}"
    );
    assert!(binomial_ok(failed as usize, 200, 0.5), "{failed} of 200");
    assert_eq!(
        after.stable.requests - before.stable.requests,
        200,
        "every GET was answered by stable and counted once there: {after:?}"
    );
    assert_eq!(after.stable.errors, 0);

    // A request with a body is not sent twice: on the dead canary it fails (502, counted).
    world.set_weight(rollout, 1000);
    std::thread::sleep(Duration::from_secs(1));
    let answer = world.request("POST", &[("Content-Type", "text/plain")], "order=1");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(answer.version.as_deref(), Some("canary"));
    let last = world.measured(rollout);
    assert_eq!(last.canary.errors - after.canary.errors, 1, "{last:?}");
    assert_eq!(last.stable.requests, after.stable.requests, "{last:?}");
}
