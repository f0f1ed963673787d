//! `snippets`: the failure-snippet scanner over a generated multi-gigabyte test log, beside
//! `grep -c ERROR` over the same file (the I/O and line-splitting floor, measured in the same
//! run). Prints throughput for both and the scanner's peak memory.
//!
//! The scanner runs in a child process (this binary, `snippets-scan`), so its peak resident
//! memory (VmHWM from /proc/self/status) is its own and not the generator's; the child
//! reports VmHWM at its start and after reading the whole file in 64 KiB chunks and
//! rendering every target. Each side runs twice, alternating, and the faster run is shown:
//! the first grep also warms the page cache for both.

use std::fmt::Write as _;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use envmgr::snippet::{self, ExitInfo, FailedTest, LogScanner, SnippetInput, Target};

use crate::cores;

const GB: u64 = 1_000_000_000;
const CHUNK: usize = 64 * 1024;
const SECRET: &str = "Sk-bench-db-password-0042";
const TOKEN: &str = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB";

pub fn snippets(gb: usize) -> Result<()> {
    let size = gb as u64 * GB;
    println!(
        "== snippets: a {gb} GB generated test log, {} cores",
        cores()
    );
    let dir = tempfile::tempdir()?; // removed with the log when dropped, on errors too
    let log = dir.path().join("test.log");
    let start = Instant::now();
    let lines = generate(&log, size)?;
    let bytes = std::fs::metadata(&log)?.len();
    println!(
        "generated {} in {:.1} s: {lines} lines, some of 20 kB and one of 5 MB, ANSI colours, \
         progress bars, a panic, a traceback, a secret and a token",
        human(bytes),
        start.elapsed().as_secs_f64()
    );

    let mut grep_runs = Vec::new();
    let mut scans = Vec::new();
    for round in 1..=2 {
        let (took, count) = grep(&log)?;
        println!(
            "round {round}: grep -c ERROR        {:>6.2} s ({count} lines)",
            took.as_secs_f64()
        );
        grep_runs.push(took);
        let scan = scan_in_child(&log)?;
        println!(
            "round {round}: scanner + render     {:>6.2} s",
            scan.took.as_secs_f64()
        );
        scans.push(scan);
    }
    let grep_best = grep_runs.iter().min().copied().unwrap_or_default();
    let Some(scan) = scans.into_iter().min_by_key(|s| s.took) else {
        bail!("no scan ran");
    };
    let rate = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9);

    println!();
    println!(
        "snippets over a {} log ({} cores), faster of 2 runs",
        human(bytes),
        cores()
    );
    println!(
        "{:<44} {:>8} {:>12} {:>22}",
        "", "time", "throughput", "peak memory (VmHWM)"
    );
    println!(
        "{:<44} {:>6.2} s {:>7.0} MB/s {:>22}",
        "grep -c ERROR (reference)",
        grep_best.as_secs_f64(),
        rate(grep_best),
        "-"
    );
    println!(
        "{:<44} {:>6.2} s {:>7.0} MB/s {:>22}",
        "LogScanner, 64 KiB chunks, + render x4",
        scan.took.as_secs_f64(),
        rate(scan.took),
        format!("{} kB (start {} kB)", scan.hwm_end_kb, scan.hwm_start_kb)
    );
    println!(
        "scanner/grep time: {:.2}x; memory grown while scanning: {} kB",
        scan.took.as_secs_f64() / grep_best.as_secs_f64().max(1e-9),
        scan.hwm_end_kb.saturating_sub(scan.hwm_start_kb)
    );
    println!(
        "found: {} failure regions, {} failure lines; secret or token in any snippet: {}",
        scan.regions,
        scan.signal_lines,
        if scan.leaked { "YES" } else { "no" }
    );
    println!(
        "\n--- Discord message ({} chars) ---\n{}\n---",
        scan.discord.chars().count(),
        scan.discord
    );
    Ok(())
}

/// Writes about `size` bytes of a plausible integration test log; returns its line count.
fn generate(path: &Path, size: u64) -> Result<u64> {
    const ORDINARY: &[&str] = &[
        "INFO  api::server: request handled method=GET path=/api/v1/items status=200 elapsed_ms=",
        "DEBUG sqlx::query: SELECT id, name, owner_id FROM items WHERE owner_id = $1; rows=",
        "\x1b[32mINFO\x1b[0m worker: job finished queue=default attempts=1 id=",
        "test api::tests::list_items_paginates ... ok (run ",
        "INFO  hyper::client: connecting to http://search:9200 connection=",
        "TRACE tower_http::trace: finished processing request latency=3 ms status=200 n=",
        "WARN  cache: miss for key items:owner:",
        "INFO  app::jobs: processed batch of 500 events in 12ms, lag=",
    ];
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut lines = 0u64;
    let mut line = String::with_capacity(256);
    let long = format!("DEBUG payload: {{\"data\":\"{}\"}}", "x".repeat(20_000));
    let mut failures = [
        (size * 3 / 10, failure_block()),
        (size * 6 / 10, traceback_block()),
    ]
    .into_iter()
    .peekable();
    let mut n = 0u64;
    while written < size {
        line.clear();
        n += 1;
        let _ = write!(
            line,
            "2024-05-01T10:{:02}:{:02}.{:03}Z ",
            (n / 60_000) % 60,
            (n / 1000) % 60,
            n % 1000
        );
        if n % 50_000 == 49_999 {
            line.push_str(&long);
        } else if n % 100_000 == 77_777 {
            line.push_str("Downloading fixtures 10%\rDownloading fixtures 55%\r\x1b[KDownloading fixtures 100%");
        } else if n % 1_000_000 == 500_000 {
            let _ = write!(
                line,
                "ERROR worker: retry {} failed: connection reset by peer",
                n / 1_000_000
            );
        } else {
            line.push_str(ORDINARY[(n % ORDINARY.len() as u64) as usize]);
            let _ = write!(line, "{}", n.wrapping_mul(2_654_435_761) % 100_000);
        }
        line.push('\n');
        if failures.peek().is_some_and(|(at, _)| written >= *at) {
            if let Some((_, block)) = failures.next() {
                line.push_str(&block);
            }
        }
        if n == 1_000 {
            // One line of 5 MB: a minified bundle or a dump printed by mistake.
            line.push_str(&"m".repeat(5_000_000));
            line.push('\n');
        }
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        lines += line.bytes().filter(|&b| b == b'\n').count() as u64;
    }
    let end = "test result: FAILED. 311 passed; 1 failed; 0 ignored\nerror: test failed, to rerun pass `-p api --test it`\nexit status 101\n";
    out.write_all(end.as_bytes())?;
    out.flush()?;
    Ok(lines + 3)
}

fn failure_block() -> String {
    format!(
        "INFO  api::tests: connecting with DATABASE_URL=postgres://app:{SECRET}@db:5432/app\n\
         thread 'api::tests::create_item' panicked at tests/api.rs:42:9:\n\
         assertion `left == right` failed\n  left: 201\n right: 500\n\
         DEBUG github: Authorization: token {TOKEN}\n\
         note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\
         test api::tests::create_item ... FAILED\n"
    )
}

fn traceback_block() -> String {
    "web-1  | Traceback (most recent call last):\n\
     web-1  |   File \"/app/fixtures.py\", line 12, in <module>\n\
     web-1  |     load(\"items.json\")\n\
     web-1  |   File \"/app/fixtures.py\", line 7, in load\n\
     web-1  |     raise ValueError(f\"bad fixture {name}\")\n\
     web-1  | ValueError: bad fixture items.json\n"
        .to_string()
}

/// `grep -c ERROR`: its time and count.
fn grep(log: &Path) -> Result<(Duration, String)> {
    let start = Instant::now();
    let out = Command::new("grep")
        .arg("-c")
        .arg("ERROR")
        .arg(log)
        .output()
        .context("grep runs")?;
    let took = start.elapsed();
    Ok((
        took,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

struct Scan {
    took: Duration,
    hwm_start_kb: u64,
    hwm_end_kb: u64,
    regions: u64,
    signal_lines: u64,
    leaked: bool,
    discord: String,
}

fn scan_in_child(log: &Path) -> Result<Scan> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("snippets-scan")
        .arg(log)
        .output()
        .context("the scan child runs")?;
    if !out.status.success() {
        bail!("snippets-scan: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (fields, discord) = stdout.split_once("---\n").unwrap_or((&stdout, ""));
    let field = |name: &str| -> Result<u64> {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("{name} in the child's output"))?
            .trim()
            .parse()
            .with_context(|| format!("{name} is a number"))
    };
    Ok(Scan {
        took: Duration::from_nanos(field("elapsed_ns")?),
        hwm_start_kb: field("hwm_start_kb")?,
        hwm_end_kb: field("hwm_end_kb")?,
        regions: field("regions")?,
        signal_lines: field("signal_lines")?,
        leaked: field("leaked")? != 0,
        discord: discord.to_string(),
    })
}

/// The child: scans `log` in 64 KiB chunks, renders every target, prints its figures.
pub fn scan_child(log: Option<&String>) -> Result<()> {
    let hwm_start_kb = vm_hwm_kb()?;
    let log = log.context("usage: snippets-scan <log>")?;
    let secrets = vec![SECRET.to_string()];
    let start = Instant::now();
    let mut file = std::fs::File::open(log)?;
    let mut scanner = LogScanner::with_secrets(&secrets);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        scanner.push(&buf[..n]);
    }
    let findings = scanner.finish();
    let failed = [FailedTest {
        name: "api::tests::create_item".into(),
        message: Some("assertion `left == right` failed\n  left: 201\n right: 500".into()),
        file: Some("tests/api.rs".into()),
        line: Some(42),
        ..FailedTest::default()
    }];
    let input = SnippetInput {
        exit: Some(ExitInfo {
            code: 101,
            ..ExitInfo::default()
        }),
        failed_tests: &failed,
        secrets: &secrets,
        log_url: "https://slipway.example.com/api/v1/envs/api-pr-7/runs/3/log",
    };
    let rendered: Vec<String> = [
        Target::CheckRunText,
        Target::GitHubComment,
        Target::DiscordEmbed,
        Target::DiscordMessage,
    ]
    .into_iter()
    .map(|target| snippet::render(&findings, &input, target))
    .collect();
    let took = start.elapsed();
    let leaked = rendered
        .iter()
        .any(|s| s.contains(SECRET) || s.contains(TOKEN));
    println!("elapsed_ns {}", took.as_nanos());
    println!("hwm_start_kb {hwm_start_kb}");
    println!("hwm_end_kb {}", vm_hwm_kb()?);
    println!("regions {}", findings.regions.len());
    println!("signal_lines {}", findings.signal_lines);
    println!("leaked {}", u8::from(leaked));
    println!("---");
    print!(
        "{}",
        rendered.last().map(String::as_str).unwrap_or_default()
    );
    Ok(())
}

fn vm_hwm_kb() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("VmHWM is a number")
}

fn human(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / GB as f64)
}
