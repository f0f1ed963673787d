//! The front door end to end on the real Docker engine: requests reach an env's services by
//! Host name (`<env>.<domain>`, `<service>--<env>.<domain>`), an env that is still starting
//! holds the request and answers it once Ready, and unknown names get a 404 page that lists
//! what exists. (Header injection and WebSocket upgrades are tested in-process against echo
//! servers in `bot/src/proxy/tests.rs`: the demo app echoes neither.)

mod harness;

use std::time::{Duration, Instant};

use harness::*;

/// `web` is main by `x-slipway.main` although `api` comes first: each answers its own
/// greeting.
const COMPOSE: &str = "services:
  api:
    image: slipway/demo-app:latest
    ports: ['8080']
    environment:
      GREETING: hello from api
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    environment:
      GREETING: hello from web
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
x-slipway:
  main: web
";

#[test]
fn the_front_door_routes_by_host_and_holds_requests_until_ready() {
    let name = unique_name("px");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE)
        .commit("two web services");
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    assert!(
        !server.proxy_url.is_empty(),
        "no front door address in the log:\n{}",
        server.tail_log()
    );
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());

    // Asked for, not waited for: the request arrives while the env is still starting, is
    // held, and gets the real answer.
    server.cli_json(&["up", "main", "--repo", &name]);
    let asked = Instant::now();
    let (status, answer) = get_via(&server.proxy_url, &format!("{env}.localhost"), "*/*");
    assert_eq!(status, 200, "{answer}\n{}", server.tail_log());
    assert!(answer.contains("hello from web"), "{answer}");
    let status = server.status(&env);
    assert_eq!(status["phase"], "Ready", "{status:#}");
    eprintln!("held request answered after {:?}", asked.elapsed());
    // The links people are shown name the port the front door really bound (`listen` says
    // port 0 here); the direct host-port URL stays beside it.
    let port = server
        .proxy_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/');
    assert_eq!(
        front_door_url_of(&status),
        format!("http://{env}.localhost:{port}/"),
        "{status:#}"
    );
    assert!(url_of(&status, "web").starts_with("http://127.0.0.1:"));

    // `<service>--<env>` reaches the other service; the port in Host is ignored.
    let (status, answer) = get_via(
        &server.proxy_url,
        &format!("api--{env}.localhost:8081"),
        "*/*",
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("hello from api"), "{answer}");

    // Unknown env, unknown service: a 404 page that lists the env that exists.
    let (status, page) = get_via(&server.proxy_url, "nope-main.localhost", "text/html");
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("No environment named `nope-main`"), "{page}");
    assert!(page.contains(&format!("{env}.localhost")), "{page}");
    let (status, page) = get_via(&server.proxy_url, &format!("db--{env}.localhost"), "*/*");
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("no service `db`"), "{page}");
    assert!(page.contains("api, web"), "{page}");
}

/// Issue 12: a sleeping env is woken by requests through the front door: 50 concurrent
/// requests make one wake and all get the app's real answer.
#[test]
fn requests_to_a_sleeping_env_wake_it_once_and_all_get_answers() {
    let name = unique_name("pw");
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n    healthcheck:\n      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']\n      interval: 1s\n",
    )
    .commit("sleepy");
    let server = Server::start(ServerOptions {
        repo_name: &name,
        repo_url: repo.path(),
        env_file: "compose.yml",
        extra: "",
        repo_extra: "idle_sleep = \"3s\"\nidle_delete = \"0\"",
        tables: "",
    });
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");
    // Watched through `env list`: a command naming the env would count as using it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = server.cli_json(&["list"]);
        let asleep = list
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == env.as_str() && e["phase"] == "Sleeping");
        if asleep {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never slept: {list:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(1));

    let host = format!("{env}.localhost");
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|_| scope.spawn(|| get_via(&server.proxy_url, &host, "application/json")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}\n{}", server.tail_log());
        assert!(answer.contains("hello from slipway demo"), "{answer}");
    }
    let status = server.status(&env);
    assert_eq!(status["phase"], "Ready");
    let wakes = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("wake requested"))
        })
        .count();
    assert_eq!(wakes, 1, "{:#}", status["events"]);
}
