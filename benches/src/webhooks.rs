//! `webhooks`: signed `pull_request` deliveries posted to `slipway serve` as fast as it
//! acknowledges them, for a fixed count, from several keep-alive connections. Prints
//! acknowledged deliveries per second and acknowledgement latency (p50, p99, max) beside the
//! same load against the server's `/healthz` (the HTTP floor, measured in the same run), then
//! checks in the store that every delivery was stored exactly once and processed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{cores, slipway_binary, workspace_root, Repo, Server};

const SECRET: &str = "bench-webhook-secret";
/// Connections sending at once, like a busy GitHub organisation's deliveries.
const CONNECTIONS: usize = 16;
/// One delivery in this many is sent twice (GitHub redelivers): it must be stored once.
const DUPLICATE_EVERY: usize = 50;

pub fn webhooks(count: usize) -> Result<()> {
    println!(
        "== webhooks: {count} signed pull_request deliveries, {CONNECTIONS} connections, {} cores",
        cores()
    );
    let fixture = workspace_root()
        .join("../shared/fixtures/github-webhooks/pull_request/opened.payload.json");
    let payload =
        std::fs::read(&fixture).with_context(|| format!("reading {}", fixture.display()))?;
    let slipway = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n",
    )?;
    repo.commit()?;
    // The fixture's repository is not linked to any repo, so deliveries are stored and then
    // handled as "not linked": the benchmark measures intake, not environments.
    let github = format!(
        "[github]\napi_url = \"http://127.0.0.1:9\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"bench\"\nresync_interval = \"1h\"\n"
    );
    let server = Server::start_with(&slipway, &repo, "hooks", "compose.yml", "webhooks", &github)?;
    let addr = server.url.trim_start_matches("http://").to_string();

    let floor = load(&addr, count, |_| Request::get("/healthz"))?;
    let signature = sign(&payload);
    let payload = Arc::new(payload);
    let ids: Vec<String> = (0..count).map(|i| format!("bench-{i:08}")).collect();
    let hooks = {
        let ids = ids.clone();
        load(&addr, count + count / DUPLICATE_EVERY, move |i| {
            // The last count/DUPLICATE_EVERY requests resend earlier ids.
            let id = if i < count {
                ids[i].clone()
            } else {
                ids[(i - count) * DUPLICATE_EVERY].clone()
            };
            Request::webhook(&id, payload.clone(), &signature)
        })?
    };

    println!();
    println!("                                     req/s      p50      p99      max   statuses");
    print_row("GET /healthz (HTTP floor)", &floor);
    print_row("POST /webhooks/github", &hooks);
    println!("goal: p99 under 50 ms at 1,000 deliveries/s; GitHub gives a receiver 10 s");

    let (stored, distinct, processed) = wait_processed(&server, count)?;
    let once = stored == count && distinct == count;
    println!(
        "stored exactly once: {} ({stored} rows, {distinct} distinct ids, {count} sent once + {} resent)",
        if once { "yes" } else { "NO" },
        count / DUPLICATE_EVERY
    );
    println!("processed: {processed} of {stored}");
    if !once {
        bail!("deliveries were not stored exactly once");
    }
    Ok(())
}

struct Request {
    head: String,
    body: Arc<Vec<u8>>,
}

impl Request {
    fn get(path: &str) -> Self {
        Request {
            head: format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"),
            body: Arc::new(Vec::new()),
        }
    }

    fn webhook(id: &str, body: Arc<Vec<u8>>, signature: &str) -> Self {
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: bench\r\nUser-Agent: GitHub-Hookshot/bench\r\n\
             Content-Type: application/json\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: {id}\r\n\
             X-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        Request { head, body }
    }
}

struct LoadResult {
    elapsed: Duration,
    latencies: Vec<Duration>,
    statuses: std::collections::BTreeMap<u16, usize>,
}

/// Sends `total` requests (`make(i)` builds request i) over `CONNECTIONS` keep-alive
/// connections, each request as soon as the previous answer on its connection arrived.
fn load(
    addr: &str,
    total: usize,
    make: impl Fn(usize) -> Request + Send + Sync + 'static,
) -> Result<LoadResult> {
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (make, next, addr) = (make.clone(), next.clone(), addr.to_string());
            std::thread::spawn(move || -> Result<Vec<(Duration, u16)>> {
                let stream = TcpStream::connect(&addr)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut writer = stream;
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return Ok(seen);
                    }
                    let request = make(i);
                    let sent = Instant::now();
                    writer.write_all(request.head.as_bytes())?;
                    writer.write_all(&request.body)?;
                    let status = read_response(&mut reader)?;
                    seen.push((sent.elapsed(), status));
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    let mut statuses = std::collections::BTreeMap::new();
    for worker in workers {
        for (latency, status) in worker
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??
        {
            latencies.push(latency);
            *statuses.entry(status).or_insert(0) += 1;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(LoadResult {
        elapsed,
        latencies,
        statuses,
    })
}

/// Reads one HTTP/1.1 response (Content-Length bodies) and returns its status.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<u16> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn print_row(name: &str, result: &LoadResult) {
    let n = result.latencies.len();
    let at = |q: f64| result.latencies[((n as f64 * q) as usize).min(n - 1)];
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let statuses: Vec<String> = result
        .statuses
        .iter()
        .map(|(s, c)| format!("{s}x{c}"))
        .collect();
    println!(
        "{name:<32} {:>9.0} {:>8} {:>8} {:>8}   {}",
        n as f64 / result.elapsed.as_secs_f64(),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(result.latencies[n - 1]),
        statuses.join(" ")
    );
}

/// Waits (up to a minute) until the processor has handled every stored delivery, then
/// returns (rows, distinct ids, processed) read from the SQLite store.
fn wait_processed(server: &Server, count: usize) -> Result<(usize, usize, usize)> {
    let db = server.data_dir().join("slipway.db");
    let started = Instant::now();
    loop {
        let (stored, distinct, processed) = query_counts(&db)?;
        if processed >= stored || started.elapsed() > Duration::from_secs(60) {
            println!(
                "processing took {:.1} s after the last acknowledgement",
                started.elapsed().as_secs_f64()
            );
            return Ok((stored, distinct, processed));
        }
        if stored < count.min(1) {
            bail!("nothing was stored");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn query_counts(db: &Path) -> Result<(usize, usize, usize)> {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("SELECT COUNT(*), COUNT(DISTINCT id), COUNT(processed_at) FROM webhook_deliveries;")
        .output()
        .context("the sqlite3 command reads the store (apt-get install sqlite3)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<usize> = text
        .trim()
        .split('|')
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => bail!(
            "unexpected sqlite3 output: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
