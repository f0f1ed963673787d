//! `proxy`: what the front door costs. One env of the demo app; the same small `GET /` is
//! sent for the same time over the same number of keep-alive HTTP/1.1 connections, first
//! straight to the container's published port, then through the front door (Host:
//! `<env>.localhost`). Prints requests/s and p50/p99 latency side by side. The load
//! generator runs on the same machine as the server and the container, so both sides pay
//! for it alike.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

use super::{cores, slipway_binary, EnvCleanup, Repo, Server};

const COMPOSE: &str = "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
";

/// Figures of one side.
pub(crate) struct Load {
    pub(crate) requests: usize,
    pub(crate) errors: usize,
    pub(crate) elapsed: Duration,
    /// Sorted, microseconds.
    pub(crate) latencies: Vec<u32>,
}

impl Load {
    pub(crate) fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[index] as f64 / 1000.0
    }
}

pub fn proxy(seconds: usize, connections: usize) -> Result<()> {
    println!(
        "== proxy: GET / of the demo app, {connections} connections, {seconds} s per side, {} cores",
        cores()
    );
    let slipway = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write("compose.yml", COMPOSE)?;
    repo.commit()?;
    let repo_name = format!("proxybench{}", std::process::id());
    let env = format!("{repo_name}-main");
    let _leftovers = EnvCleanup {
        repo: repo_name.clone(),
        envs: vec![env.clone()],
    };
    let server = Server::start(&slipway, &repo, &repo_name, "compose.yml", "proxy")?;
    if server.proxy_url.is_empty() {
        bail!(
            "the server did not say where its front door is:\n{}",
            server.tail_log()
        );
    }
    server.up(&repo_name, "main")?;
    let status: serde_json::Value = serde_json::from_str(&server.cli_output(&["status", &env])?)?;
    let host_port = status["services"]
        .as_array()
        .and_then(|services| services.iter().find(|s| s["name"] == "web"))
        .and_then(|web| web["ports"][0]["host_port"].as_u64())
        .with_context(|| format!("no published port in {status:#}"))?;
    let direct = format!("127.0.0.1:{host_port}");
    let front_door = server.proxy_url.trim_start_matches("http://").to_string();
    let host = format!("{env}.localhost");

    let runtime = tokio::runtime::Runtime::new()?;
    let duration = Duration::from_secs(seconds as u64);
    // A short warm-up of each path (connections, the proxy's route cache and pool).
    runtime.block_on(load(&direct, &host, connections, Duration::from_secs(2)))?;
    runtime.block_on(load(
        &front_door,
        &host,
        connections,
        Duration::from_secs(2),
    ))?;
    println!("direct to {direct} ...");
    let straight = runtime.block_on(load(&direct, &host, connections, duration))?;
    println!("through the front door at {front_door} ...");
    let proxied = runtime.block_on(load(&front_door, &host, connections, duration))?;

    println!();
    println!(
        "GET / of the demo app, {connections} keep-alive connections, {seconds} s each, {} cores",
        cores()
    );
    println!(
        "{:<24} {:>12} {:>10} {:>10} {:>8}",
        "", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    for (label, side) in [("direct (host port)", &straight), ("front door", &proxied)] {
        println!(
            "{label:<24} {:>12.0} {:>10.3} {:>10.3} {:>8}",
            side.rate(),
            side.percentile(0.50),
            side.percentile(0.99),
            side.errors
        );
    }
    println!(
        "front door / direct: throughput {:.0}% (goal >= 80%), p99 overhead {:.3} ms (goal < 1 ms)",
        100.0 * proxied.rate() / straight.rate(),
        proxied.percentile(0.99) - straight.percentile(0.99)
    );
    Ok(())
}

/// `connections` keep-alive connections to `addr`, each sending `GET /` with `host` one
/// after another until `duration` is over.
pub(crate) async fn load(
    addr: &str,
    host: &str,
    connections: usize,
    duration: Duration,
) -> Result<Load> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let addr = addr.to_string();
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            connection(&addr, &host, deadline).await
        }));
    }
    let mut all = Load {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (latencies, errors) = task.await??;
        all.requests += latencies.len();
        all.errors += errors;
        all.latencies.extend(latencies);
    }
    all.elapsed = started.elapsed();
    all.latencies.sort_unstable();
    Ok(all)
}

/// One connection's latencies (µs) and failed requests; reconnects after a failure.
async fn connection(addr: &str, host: &str, deadline: Instant) -> Result<(Vec<u32>, usize)> {
    let mut latencies = Vec::new();
    let mut errors = 0;
    'connect: while Instant::now() < deadline {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let request = hyper::Request::get("/")
                .header(hyper::header::HOST, host)
                .body(Empty::new())?;
            let sent = Instant::now();
            let ok = match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    response.into_body().collect().await.is_ok() && status.is_success()
                }
                Err(_) => false,
            };
            if !ok {
                errors += 1;
                continue 'connect;
            }
            latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
    Ok((latencies, errors))
}
