//! `scheduler-idle`: what the controller costs while nothing happens. N envs (default 10,000)
//! are written straight into a SQLite store as Ready (no containers behind them), then
//! `slipway serve` runs on that store; its CPU time and resident memory over a window that
//! spans two resyncs, beside the same server on an empty store in the same run.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use envmgr::names::{BranchName, EnvName, RepoName};
use envmgr::store::{Phase, Store, UpRequest};

use super::{cores, slipway_binary, Repo, Server};

/// Long enough for two resyncs at the 30 s default.
const WINDOW: Duration = Duration::from_secs(65);

pub fn scheduler_idle(count: usize) -> Result<()> {
    println!(
        "== scheduler-idle: {count} Ready envs in the store, nothing happening, {} cores",
        cores()
    );
    let binary = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write(
        "compose.yml",
        "services:\n  app:\n    image: slipway/demo-app:latest\n",
    )?;
    repo.commit()?;
    let name = format!("idle{}", std::process::id());

    let mut results = Vec::new();
    for envs in [0, count] {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
        let made = Instant::now();
        seed(&url, &name, envs, "b", false)?;
        if envs > 0 {
            println!(
                "{envs} env rows written in {:.1} s",
                made.elapsed().as_secs_f64()
            );
        }
        let top = format!("database_url = \"{url}\"\n");
        let server = Server::start_full(
            &binary,
            &repo,
            &name,
            "compose.yml",
            &format!("scheduler-idle-{envs}"),
            &top,
            "",
        )?;
        // The first resync looks at every env once; then the steady state is measured.
        std::thread::sleep(Duration::from_secs(10));
        let before = cpu_ticks(server.pid())?;
        std::thread::sleep(WINDOW);
        let used = cpu_ticks(server.pid())? - before;
        let (rss, hwm) = server.memory()?;
        let share = used as f64 / ticks_per_second() / WINDOW.as_secs_f64() * 100.0;
        println!(
            "{envs:>6} envs: CPU {share:.2}% of one core over {}s, VmRSS {rss} kB (peak {hwm} kB)",
            WINDOW.as_secs()
        );
        results.push((envs, share, rss));
    }
    println!();
    println!("{:<24} {:>12} {:>12}", "", "CPU (1 core)", "VmRSS");
    for (envs, share, rss) in &results {
        println!(
            "{:<24} {share:>11.2}% {:>9.1} MB",
            format!("{envs} idle envs"),
            *rss as f64 / 1024.0
        );
    }
    println!("(targets with {count} envs: CPU < 5% of a core, RSS < 60 MB)");
    Ok(())
}

/// `count` converged envs of `repo` (branches `<prefix>00000`...), made through the
/// store's own API: Ready, or asleep (Sleeping, no containers behind either).
pub(crate) fn seed(url: &str, repo: &str, count: usize, prefix: &str, asleep: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(async {
            let store = Store::connect(url).await?;
            let repo = RepoName::parse(repo)?;
            for i in 0..count {
                let branch = BranchName::from_user(&format!("{prefix}{i:05}"))?;
                let name = EnvName::for_branch(&repo, &branch);
                let record = store
                    .request_up(&UpRequest {
                        name: name.clone(),
                        repo: repo.clone(),
                        branch,
                        ttl: Duration::from_secs(7 * 24 * 3600),
                        actor: "bench".into(),
                        pull_request: None,
                    })
                    .await?;
                store
                    .record_observed_generation(&name, record.generation)
                    .await?;
                if asleep {
                    store.request_sleep(&name, "bench", "seeded asleep").await?;
                    store
                        .set_phase(&name, Phase::Sleeping, None, "seeded asleep")
                        .await?;
                    store.record_slept(&name).await?;
                } else {
                    store.set_phase(&name, Phase::Ready, None, "seeded").await?;
                }
            }
            anyhow::Ok(())
        })
        .context("seeding the store")
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux this runs on.
    100.0
}
