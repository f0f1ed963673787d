//! Slipway demo app: one small std-only binary that plays every role in the demo
//! environment (`serve`, `probe`, `worker`, `migrate`).
//!
//! It runs in a `FROM scratch` image as a statically linked glibc binary. In such an
//! image glibc's `getaddrinfo` cannot load its NSS modules, so std's `ToSocketAddrs`
//! fails for names like `web`: we resolve names ourselves (IP literal, /etc/hosts,
//! then a minimal DNS A query to the resolv.conf nameserver).
//!
//! `serve` knobs (env): PORT (8080), GREETING, ERROR_RATE (0.0-1.0 of `GET /` answered
//! 500), LATENCY_MS (delay before every response), FAIL_HEALTH=1 or a file
//! /tmp/unhealthy (make /healthz answer 503). Routes: `/`, `/healthz`, `/metrics`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs, process, thread};

const MAX_HEAD: usize = 16 * 1024; // request line + headers
const MAX_BODY: u64 = 1024 * 1024; // larger bodies get 413 and a closed connection
const MAX_CONNS: usize = 512;
const CONN_TIMEOUT: Duration = Duration::from_secs(10); // idle keep-alive and slow clients
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

fn main() {
    install_signal_handlers();
    let args: Vec<String> = env::args().collect();
    let code = match args.get(1).map(String::as_str).unwrap_or("serve") {
        "serve" => serve(),
        "probe" => match args.get(2) {
            Some(url) => probe(url),
            None => usage(),
        },
        "worker" => worker(),
        "migrate" => migrate(),
        "selftest" => selftest(),
        _ => usage(),
    };
    process::exit(code);
}

fn usage() -> i32 {
    eprintln!("usage: demo-app [serve | probe URL | worker | migrate | selftest]");
    2
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- server

struct Config {
    greeting: String,
    hostname: String,
    error_rate: f64,
    latency: Duration,
    fail_health: bool,
}

const ROUTES: [&str; 4] = ["/", "/healthz", "/metrics", "other"];
static REQUESTS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static ERRORS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static ACTIVE_CONNS: AtomicUsize = AtomicUsize::new(0);

fn serve() -> i32 {
    let cfg = Arc::new(Config {
        greeting: env::var("GREETING").unwrap_or_else(|_| "hello from slipway demo".into()),
        hostname: hostname(),
        error_rate: env_or("ERROR_RATE", 0.0f64).clamp(0.0, 1.0),
        latency: Duration::from_millis(env_or("LATENCY_MS", 0)),
        fail_health: env::var("FAIL_HEALTH").is_ok_and(|v| v.trim() == "1"),
    });
    let port: u16 = env_or("PORT", 8080);
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 0.0.0.0:{port}: {e}");
            return 1;
        }
    };
    println!("demo-app serving on 0.0.0.0:{port} as {}", cfg.hostname);
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        // One thread per connection, bounded so a flood cannot exhaust memory.
        if ACTIVE_CONNS.fetch_add(1, Relaxed) >= MAX_CONNS {
            ACTIVE_CONNS.fetch_sub(1, Relaxed);
            continue; // dropping the stream closes it
        }
        let cfg = Arc::clone(&cfg);
        thread::spawn(move || {
            let _ = handle_conn(stream, &cfg);
            ACTIVE_CONNS.fetch_sub(1, Relaxed);
        });
    }
    0
}

fn hostname() -> String {
    env::var("HOSTNAME")
        .ok()
        .or_else(|| fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

struct Request {
    method: String,
    target: String,
    content_length: u64,
    close: bool,
}

fn handle_conn(mut stream: TcpStream, cfg: &Config) -> io::Result<()> {
    stream.set_write_timeout(Some(CONN_TIMEOUT))?;
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut buf = Vec::new(); // bytes read but not yet consumed (pipelining)
    loop {
        let deadline = Instant::now() + CONN_TIMEOUT;
        let head_len = match read_until(&mut stream, &mut buf, b"\r\n\r\n", MAX_HEAD, deadline) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(()), // client closed between requests
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return reject(&mut stream, 431, "headers too large\n");
            }
            Err(e) => return Err(e),
        };
        let head: Vec<u8> = buf.drain(..head_len).collect();
        let Some(req) = parse_head(&String::from_utf8_lossy(&head)) else {
            return reject(&mut stream, 400, "bad request\n");
        };
        if req.content_length > MAX_BODY {
            return reject(&mut stream, 413, "body too large\n");
        }
        // Discard the body so the next request on this connection starts at a boundary.
        let buffered = buf.len().min(req.content_length as usize);
        buf.drain(..buffered);
        let rest = req.content_length - buffered as u64;
        if rest > 0 {
            stream.set_read_timeout(Some(CONN_TIMEOUT))?;
            if io::copy(&mut (&stream).take(rest), &mut io::sink())? < rest {
                return Ok(());
            }
        }

        let started = Instant::now();
        thread::sleep(cfg.latency);
        let path = req.target.split('?').next().unwrap_or("");
        let route = ROUTES.iter().position(|r| *r == path).unwrap_or(3);
        let (status, ctype, body) = route_request(cfg, &req.method, route);
        REQUESTS[route].fetch_add(1, Relaxed);
        if status >= 500 {
            ERRORS[route].fetch_add(1, Relaxed);
        }
        respond(&mut stream, status, ctype, body.as_bytes(), req.close)?;
        let (method, target, ms) = (&req.method, &req.target, started.elapsed().as_millis());
        println!(
            "{peer} \"{method} {target}\" {status} {}B {ms}ms",
            body.len()
        );
        if req.close {
            return Ok(());
        }
    }
}

fn route_request(cfg: &Config, method: &str, route: usize) -> (u16, &'static str, String) {
    let text = "text/plain; charset=utf-8";
    if route == 3 {
        return (404, text, "not found\n".into());
    } else if method != "GET" {
        return (405, text, "method not allowed\n".into());
    }
    match ROUTES[route] {
        "/" => {
            if cfg.error_rate > 0.0 && random_unit() < cfg.error_rate {
                // Said on stderr like a real failure, so logs and alerts have something to show.
                eprintln!("error: GET / failed: injected error (ERROR_RATE={})", cfg.error_rate);
                return (500, text, "injected error (ERROR_RATE)\n".into());
            }
            (
                200,
                text,
                format!("{}\nhostname: {}\n", cfg.greeting, cfg.hostname),
            )
        }
        "/healthz" if cfg.fail_health || fs::metadata("/tmp/unhealthy").is_ok() => {
            (503, text, "unhealthy\n".into())
        }
        "/healthz" => (200, text, "ok".into()),
        _ => (200, "text/plain; version=0.0.4", metrics()),
    }
}

fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    // HTTP/1.0 keep-alive is rare enough that we always close those connections.
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        content_length: 0,
        close: version != "HTTP/1.1",
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => req.content_length = value.parse().ok()?,
            // We do not decode chunked bodies; closing afterwards keeps framing safe.
            "transfer-encoding" => req.close = true,
            "connection" => {
                req.close |= value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("close"))
            }
            _ => {}
        }
    }
    Some(req)
}

/// Answers with an error and closes: after a framing problem the stream is unusable.
fn reject(stream: &mut TcpStream, status: u16, msg: &str) -> io::Result<()> {
    respond(stream, status, "text/plain", msg.as_bytes(), true)
}

fn respond(
    s: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let conn = if close { "Connection: close\r\n" } else { "" };
    let len = body.len();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\n{conn}\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out)
}

fn metrics() -> String {
    let mut out = String::from(
        "# HELP demo_http_requests_total HTTP requests handled, by route.\n\
         # TYPE demo_http_requests_total counter\n",
    );
    for (i, route) in ROUTES.iter().enumerate() {
        let n = REQUESTS[i].load(Relaxed);
        out += &format!("demo_http_requests_total{{route=\"{route}\"}} {n}\n");
    }
    out += "# HELP demo_http_errors_total HTTP responses with a 5xx status, by route.\n\
            # TYPE demo_http_errors_total counter\n";
    for (i, route) in ROUTES.iter().enumerate() {
        let n = ERRORS[i].load(Relaxed);
        out += &format!("demo_http_errors_total{{route=\"{route}\"}} {n}\n");
    }
    out
}

/// xorshift64, seeded from the clock on first use; plenty for sampling `ERROR_RATE`.
fn random_unit() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Relaxed);
    if x == 0 {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        x = (t.as_nanos() as u64) ^ (u64::from(process::id()) << 32) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Relaxed); // a lost update between threads only repeats a sample
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Reads from `stream` into `buf` until `marker` appears; returns the length up to and
/// including the marker. `Ok(None)` means EOF before any byte; `InvalidData` means the
/// marker was not found within `cap` bytes.
fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    marker: &[u8],
    cap: usize,
    deadline: Instant,
) -> io::Result<Option<usize>> {
    let mut chunk = [0u8; 4096];
    loop {
        let found = buf.windows(marker.len()).position(|w| w == marker);
        let len = found.map_or(buf.len(), |i| i + marker.len());
        if len > cap {
            return Err(invalid("header too large"));
        } else if found.is_some() {
            return Ok(Some(len));
        }
        // A per-read timeout alone would let a client dribble bytes forever.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk)? {
            0 if buf.is_empty() => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------- client roles

fn probe(url: &str) -> i32 {
    match http_get(url, CLIENT_TIMEOUT) {
        Ok(status) => {
            println!("{url}: {status}");
            i32::from(!(200..300).contains(&status))
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            1
        }
    }
}

fn worker() -> i32 {
    let url = env::var("TARGET_URL").unwrap_or_else(|_| "http://web:8080/".into());
    let interval = Duration::from_millis(env_or("INTERVAL_MS", 1000));
    let max_failures: u32 = env_or("MAX_FAILURES", 30);
    let mut failures = 0;
    loop {
        thread::sleep(interval);
        // Resolve on every request: the target container may be recreated with a new IP.
        match http_get(&url, CLIENT_TIMEOUT) {
            Ok(status) if (200..300).contains(&status) => {
                failures = 0;
                println!("GET {url} -> {status}");
                continue;
            }
            Ok(status) => println!("GET {url} -> {status}"),
            Err(e) => println!("GET {url} failed: {e}"),
        }
        failures += 1;
        if failures >= max_failures {
            eprintln!("giving up after {failures} consecutive failures");
            return 1;
        }
    }
}

fn migrate() -> i32 {
    for step in ["001_create_users", "002_add_email_index", "003_seed_data"] {
        println!("applying migration {step}...");
    }
    thread::sleep(Duration::from_millis(env_or("MIGRATE_SLEEP_MS", 0)));
    let code = env_or("MIGRATE_EXIT", 0);
    println!("migrations done (exit {code})");
    code
}

/// `selftest`: the demo's integration tests, run against `TARGET_URL` (default
/// http://web:8080). Prints each test like `cargo test`, writes a JUnit report to
/// `$SLIPWAY_JUNIT_PATH` when set, and exits 1 if a test failed. Knobs to exercise failure
/// reports: `FAIL_TEST=1` (an assertion fails), `PRINT_SECRET=VAR` (prints VAR's value, as a
/// careless test would), `TEST_SLEEP_MS` (runs long), `HOG_MB` (holds that much memory).
fn selftest() -> i32 {
    let base = env::var("TARGET_URL").unwrap_or_else(|_| "http://web:8080".into());
    let base = base.trim_end_matches('/');
    thread::sleep(Duration::from_millis(env_or("TEST_SLEEP_MS", 0)));
    if let Ok(var) = env::var("PRINT_SECRET") {
        println!("connecting with token {}", env::var(&var).unwrap_or_default());
    }
    let hog_mb: usize = env_or("HOG_MB", 0);
    // vec![1; n] writes every byte, so the memory is really resident.
    let held: Vec<Vec<u8>> = (0..hog_mb).map(|_| vec![1u8; 1 << 20]).collect();
    if !held.is_empty() {
        println!("holding {} MB", held.len());
    }
    let status = |path: &str| http_get(&format!("{base}{path}"), CLIENT_TIMEOUT);
    let mut cases: Vec<(&str, Duration, Option<(String, String)>)> = Vec::new();
    let mut check = |name: &'static str, result: Result<(), (String, String)>, started: Instant| {
        println!("test demo::{name} ... {}", if result.is_ok() { "ok" } else { "FAILED" });
        cases.push((name, started.elapsed(), result.err()));
    };
    for (name, path) in [("web_answers_root", "/"), ("web_is_healthy", "/healthz")] {
        let started = Instant::now();
        let result = match status(path) {
            Ok(200) => Ok(()),
            Ok(code) => Err((format!("GET {path} answered {code}, expected 200"), String::new())),
            Err(e) => Err((format!("GET {path} failed: {e}"), String::new())),
        };
        check(name, result, started);
    }
    if env::var("FAIL_TEST").is_ok_and(|v| v == "1") {
        let started = Instant::now();
        let message = "assertion `left == right` failed: greeting should be localised".to_string();
        let details = format!("thread 'demo::greeting_is_localised' panicked at tests/demo.rs:12:5:\n{message}\n  left: \"hello\"\n right: \"bonjour\"");
        println!("{details}");
        check("greeting_is_localised", Err((message, details)), started);
    }
    let failed = cases.iter().filter(|c| c.2.is_some()).count();
    println!(
        "test result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        cases.len() - failed
    );
    if let Ok(path) = env::var("SLIPWAY_JUNIT_PATH") {
        if let Err(e) = std::fs::write(&path, junit_xml(&cases)) {
            eprintln!("cannot write the JUnit report to {path}: {e}");
        }
    }
    i32::from(failed > 0)
}

fn junit_xml(cases: &[(&str, Duration, Option<(String, String)>)]) -> String {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let failures = cases.iter().filter(|c| c.2.is_some()).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n<testsuite name=\"demo\" tests=\"{}\" failures=\"{failures}\">\n",
        cases.len()
    );
    for (name, took, failure) in cases {
        let time = took.as_secs_f64();
        match failure {
            None => xml.push_str(&format!("<testcase classname=\"demo\" name=\"{name}\" time=\"{time:.3}\"/>\n")),
            Some((message, details)) => {
                // Only the assertion has a place in the source to point at.
                let place = if details.is_empty() { String::new() } else { " file=\"tests/demo.rs\" line=\"12\"".into() };
                xml.push_str(&format!(
                    "<testcase classname=\"demo\" name=\"{name}\" time=\"{time:.3}\"{place}>\n\
                     <failure message=\"{}\">{}</failure>\n</testcase>\n",
                    escape(message),
                    escape(details)
                ))
            }
        }
    }
    xml.push_str("</testsuite>\n</testsuites>\n");
    xml
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// GET `http://host[:port][/path]` and return the status code, all within `timeout`.
fn http_get(url: &str, timeout: Duration) -> io::Result<u16> {
    let deadline = Instant::now() + timeout;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("not an http:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().map_err(|_| invalid("bad port"))?),
        _ => (authority, 80), // no port, or a bare [IPv6] literal
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut stream = connect_any(&resolve(host, deadline)?, port, deadline)?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let n = read_until(&mut stream, &mut buf, b"\r\n", 1024, deadline)?
        .ok_or_else(|| invalid("connection closed before the status line"))?;
    let line = String::from_utf8_lossy(&buf[..n]);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
        (Some(v), Some(status)) if v.starts_with("HTTP/") => Ok(status),
        _ => Err(invalid(format!("bad status line {:?}", line.trim_end()))),
    }
}

fn connect_any(addrs: &[IpAddr], port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for ip in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&SocketAddr::new(*ip, port), left) {
            Ok(s) => return Ok(s),
            Err(e) => last = io::Error::new(e.kind(), format!("connect {ip}:{port}: {e}")),
        }
    }
    Err(last)
}

// ---------------------------------------------------------------- name resolution

/// Like glibc's "files dns" order, minus everything the demo does not need.
fn resolve(host: &str, deadline: Instant) -> io::Result<Vec<IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    let from_hosts: Vec<IpAddr> = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let ip = fields.next()?.parse().ok()?;
            fields
                .any(|name| name.eq_ignore_ascii_case(host))
                .then_some(ip)
        })
        .collect();
    if !from_hosts.is_empty() {
        return Ok(from_hosts);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let nameserver = resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)); // glibc's default too
    dns_query_a(host, nameserver, deadline)
        .map_err(|e| io::Error::new(e.kind(), format!("resolve {host} via {nameserver}: {e}")))
}

/// Minimal DNS A-record lookup over UDP (RFC 1035), with one retransmission.
fn dns_query_a(host: &str, server: IpAddr, deadline: Instant) -> io::Result<Vec<IpAddr>> {
    let id = (random_unit() * 65536.0) as u16;
    // Header: id, flags = RD (recursion desired), 1 question, 0 other records.
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("invalid host name"));
        }
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root label, QTYPE=A, QCLASS=IN

    let sock = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    sock.connect((server, 53))?; // the kernel now drops datagrams from other peers
    let mut resp = [0u8; 1500];
    for _attempt in 0..2 {
        sock.send(&query)?;
        let until = (Instant::now() + Duration::from_millis(900)).min(deadline);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            let Ok(n) = sock.recv(&mut resp) else { break }; // timeout or refused: resend
                                                             // Ignore stray or stale replies: wrong id, or not a response (QR bit).
            if n >= 12 && resp[..2] == id.to_be_bytes() && resp[2] & 0x80 != 0 {
                return parse_a_answers(&resp[..n]).unwrap_or_else(|| Err(invalid("bad reply")));
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no DNS reply"))
}

/// Extracts A records from a DNS response; `None` if the packet is malformed.
fn parse_a_answers(msg: &[u8]) -> Option<io::Result<Vec<IpAddr>>> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]));
    match msg[3] & 0x0f {
        0 => {}
        3 => return Some(Err(io::Error::new(io::ErrorKind::NotFound, "no such host"))),
        rcode => return Some(Err(io::Error::other(format!("DNS error (rcode {rcode})")))),
    }
    let (qdcount, ancount) = (u16_at(4)?, u16_at(6)?);
    let mut pos = 12;
    for _ in 0..qdcount {
        pos = skip_name(msg, pos)? + 4; // QTYPE, QCLASS
    }
    let mut ips = Vec::new();
    for _ in 0..ancount {
        pos = skip_name(msg, pos)?;
        let (rtype, class, rdlen) = (u16_at(pos)?, u16_at(pos + 2)?, u16_at(pos + 8)? as usize);
        let rdata = msg.get(pos + 10..pos + 10 + rdlen)?;
        if rtype == 1 && class == 1 && rdlen == 4 {
            ips.push(IpAddr::V4(Ipv4Addr::new(
                rdata[0], rdata[1], rdata[2], rdata[3],
            )));
        } // CNAMEs and anything else: the A records for the target follow in the answer
        pos += 10 + rdlen;
    }
    if ips.is_empty() {
        return Some(Err(io::Error::new(io::ErrorKind::NotFound, "no A records")));
    }
    Some(Ok(ips))
}

/// Returns the offset just past the (possibly compressed) name starting at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + len as usize,
            0xc0 => return Some(pos + 2), // a pointer always ends the name
            _ => return None,             // reserved label types
        }
    }
}

// ---------------------------------------------------------------- signals

// As PID 1 in a container, the kernel drops SIGTERM unless a handler is installed, so
// `docker stop` would wait out its whole grace period. std has no signal API, so call
// libc (always linked) directly; the handler only calls the async-signal-safe `_exit`.
#[cfg(target_os = "linux")]
fn install_signal_handlers() {
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(code: i32) -> !;
    }
    extern "C" fn on_signal(_: i32) {
        unsafe { _exit(0) }
    }
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

#[cfg(not(target_os = "linux"))]
fn install_signal_handlers() {}
