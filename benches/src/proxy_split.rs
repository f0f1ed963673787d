//! `proxy-split`: what a rollout's traffic split costs in the front door. Slipway runs
//! in-process (`slipway::testing::TestApp`) with its real front door and SQLite store, on the
//! runtime's test twin whose containers are on loopback; the release env and the canary
//! env both publish the port of one small HTTP server of this bench, so both versions are
//! the same upstream and only the front door's work differs. The same `GET /` load (the
//! `proxy` bench's generator) runs in alternating rounds without a rollout and with a
//! rollout at 50% (split, per-version counting and its writes to the store included), and
//! the figures are printed side by side, with what the store counted for the split rounds.

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use slipway::testing::TestApp;

use super::proxy::{load, Load};
use super::{cores, Repo};

pub fn proxy_split(seconds: usize, connections: usize, rounds: usize) -> Result<()> {
    println!(
        "== proxy-split: GET / through the front door without and with a 50% split, \
         {connections} connections, {rounds} x {seconds} s per side, {} cores",
        cores()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let upstream = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = upstream.local_addr()?.port();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = upstream.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello from the bench\n",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let repo = Repo::new()?;
    let compose = format!("services:\n  web:\n    image: bench\n    ports: ['{port}']\n");
    repo.write("compose.yml", &compose)?;
    repo.commit()?;
    repo.git(&["branch", "staging"])?;
    repo.git(&["branch", "staging-canary"])?;
    let data_dir = tempfile::tempdir()?;
    let name = "splitbench";
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[repo]]\nname = \"{name}\"\nurl = \"{}\"\n\
         env_file = \"compose.yml\"\n\n[proxy]\nlisten = \"127.0.0.1:0\"\n",
        data_dir.path().display(),
        repo.path().display()
    );
    let app = TestApp::start_with_front_door(&config)?;
    let front_door = app
        .front_door_url()
        .context("no front door")?
        .trim_start_matches("http://")
        .to_string();
    let release_env = format!("{name}-staging");
    let canary_env = format!("{name}-staging-canary");
    for branch in ["staging", "staging-canary"] {
        api(
            app.url(),
            "POST",
            "/api/v1/envs",
            &format!("{{\"repo\":\"{name}\",\"branch\":\"{branch}\"}}"),
        )?;
    }
    for env in [&release_env, &canary_env] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !api(app.url(), "GET", &format!("/api/v1/envs/{env}"), "")?
            .contains("\"phase\":\"Ready\"")
        {
            if Instant::now() > deadline {
                bail!("{env} never became Ready:\n{}", app.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let url = format!("sqlite://{}", data_dir.path().join("slipway.db").display());
    let db = runtime.block_on(sqlx::SqlitePool::connect(&url))?;
    let store = runtime.block_on(envmgr::store::Store::connect(&url))?;
    let host = format!("{release_env}.localhost");
    let duration = Duration::from_secs(seconds as u64);

    runtime.block_on(load(
        &front_door,
        &host,
        connections,
        Duration::from_secs(2),
    ))?;
    let mut plain = Vec::new();
    let mut split = Vec::new();
    let mut rollouts = Vec::new();
    for round in 0..rounds {
        println!("round {}: no split ...", round + 1);
        plain.push(runtime.block_on(load(&front_door, &host, connections, duration))?);
        let id: i64 = runtime.block_on(
            sqlx::query_scalar(
                "INSERT INTO rollouts (repo, channel, release_env, canary_env, to_commit, \
                 source, state, canary_weight, requested_by, created_at, updated_at) \
                 VALUES (?, 'staging', ?, ?, '0123456789abcdef0123456789abcdef01234567', \
                 'bench', 'progressing', 500, 'bench', 0, 0) RETURNING id",
            )
            .bind(name)
            .bind(&release_env)
            .bind(&canary_env)
            .fetch_one(&db),
        )?;
        // The front door reads splits every 250 ms.
        std::thread::sleep(Duration::from_secs(1));
        println!("round {}: 50% split ...", round + 1);
        split.push(runtime.block_on(load(&front_door, &host, connections, duration))?);
        runtime.block_on(
            sqlx::query("UPDATE rollouts SET state = 'done' WHERE id = ?")
                .bind(id)
                .execute(&db),
        )?;
        rollouts.push(id);
        std::thread::sleep(Duration::from_secs(1));
    }
    // Everything flushed (twice a second).
    std::thread::sleep(Duration::from_secs(2));
    let mut stable = 0;
    let mut canary = 0;
    for id in &rollouts {
        let window = runtime.block_on(store.traffic_window(*id, 0))?;
        stable += window.stable.requests;
        canary += window.canary.requests;
    }

    let plain = merged(plain);
    let split = merged(split);
    println!();
    println!(
        "GET / of a loopback stand-in, {connections} keep-alive connections, {rounds} x {seconds} s each, {} cores (the load generator and the stand-in share them)",
        cores()
    );
    println!(
        "{:<24} {:>12} {:>10} {:>10} {:>8}",
        "", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    for (label, side) in [("no split", &plain), ("50% split", &split)] {
        println!(
            "{label:<24} {:>12.0} {:>10.3} {:>10.3} {:>8}",
            side.rate(),
            side.percentile(0.50),
            side.percentile(0.99),
            side.errors
        );
    }
    println!(
        "split / no split: throughput {:.0}%, p99 difference {:+.3} ms",
        100.0 * split.rate() / plain.rate(),
        split.percentile(0.99) - plain.percentile(0.99)
    );
    println!(
        "counted by the front door in the split rounds: {stable} stable + {canary} canary = {} \
         (the load generator got {} answers; {:.1}% canary)",
        stable + canary,
        split.requests,
        100.0 * canary as f64 / (stable + canary).max(1) as f64
    );
    Ok(())
}

/// The rounds of one side as one.
fn merged(rounds: Vec<Load>) -> Load {
    let mut all = Load {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for round in rounds {
        all.requests += round.requests;
        all.errors += round.errors;
        all.elapsed += round.elapsed;
        all.latencies.extend(round.latencies);
    }
    all.latencies.sort_unstable();
    all
}

/// One request to the API (no token: the test app trusts loopback); the body of a 2xx.
fn api(base: &str, method: &str, path: &str, body: &str) -> Result<String> {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with('2') {
        bail!("{method} {path}: {response}");
    }
    Ok(response)
}
