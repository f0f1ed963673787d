//! `queue-sim`: the submit queue's scheduler in the discrete-event simulator, beside the
//! policies other queues use, all on the same machine and the same model CI in one run:
//! serial one-at-a-time (bors), reset-everything-behind-a-failure with depth N (Zuul,
//! GitHub's merge queue) and Slipway's. Reference scenario: test runs of 30 min mean
//! (lognormal), 10% of changes bad, 2% flake rate per run, 8 CI slots, the queue kept full.

use std::time::Instant;

use anyhow::{ensure, Result};
use envmgr::queue::sim::{policies, simulate, Model};

pub fn queue_sim(changes: usize) -> Result<()> {
    let model = Model {
        changes,
        ..Model::default()
    };
    println!(
        "== queue-sim: {} changes, {} CI slots, test runs of {:.0} min mean (lognormal, \
         sigma {}), {:.0}% of changes bad, {:.0}% flake rate per run, queue kept at {} changes",
        model.changes,
        model.slots,
        model.test_minutes,
        model.spread,
        model.bad * 100.0,
        model.flake * 100.0,
        model.queue
    );
    let policies = policies(model.slots);
    let mut rows = Vec::new();
    for policy in &policies {
        let start = Instant::now();
        let report = simulate(&model, &policy.settings);
        println!(
            "simulated {:<28} in {:.1} s ({:.0} simulated hours)",
            policy.name,
            start.elapsed().as_secs_f64(),
            report.hours
        );
        rows.push((policy.name, report));
    }

    println!();
    let header = |label: &str| {
        print!("{label:<30}");
        for (name, _) in &rows {
            print!("{name:>30}");
        }
        println!();
    };
    let row = |label: &str, cell: &dyn Fn(&envmgr::queue::sim::Report) -> String| {
        print!("{label:<30}");
        for (_, report) in &rows {
            print!("{:>30}", cell(report));
        }
        println!();
    };
    header("");
    row("merges per hour", &|r| {
        format!("{:.2}", r.merges_per_hour())
    });
    row("builds (test runs) per merge", &|r| {
        format!("{:.3}", r.builds_per_merge())
    });
    row("p50 enqueue-to-merge", &|r| hours(r.latency_minutes(0.5)));
    row("p95 enqueue-to-merge", &|r| hours(r.latency_minutes(0.95)));
    row("good changes wrongly evicted", &|r| {
        format!("{} ({:.3}%)", r.evicted_good, r.wrongly_evicted_percent())
    });
    row("main broken (landed bad)", &|r| r.main_broken.to_string());
    row("landed untested tree", &|r| r.unsafe_landings.to_string());
    row("runs cancelled unfinished", &|r| {
        r.cancelled_runs.to_string()
    });
    row("flaky passes reported", &|r| r.flaky.to_string());
    row("CI slot utilisation", &|r| {
        format!("{:.1}%", r.utilisation_percent(model.slots))
    });
    println!(
        "{:<30}{:>30}",
        "bound N/T (one change per run)",
        format!("{:.2}", model.slots as f64 * 60.0 / model.test_minutes)
    );
    println!(
        "(targets: Slipway >= 13 merges/h at <= 1.2 builds per merge, < 0.5% wrongly evicted, \
         0 main broken; latency at saturation is the queue's length over its throughput)"
    );
    for (name, report) in &rows {
        ensure!(
            report.stuck == 0,
            "{name}: {} changes never left the queue",
            report.stuck
        );
    }
    Ok(())
}

fn hours(minutes: f64) -> String {
    format!("{:.1} h", minutes / 60.0)
}
