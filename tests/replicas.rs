//! Several `slipway serve` replicas on one Postgres, against the real Docker engine: envs
//! asked of either replica are each started once, by one of them; a replica killed with
//! SIGKILL mid-start has its env carried on by another once the lease runs out, with
//! exactly the env's containers at the end.

mod harness;

#[path = "../envmgr/tests/support/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use harness::*;
use postgres::TestPostgres;

/// `migrate` takes a few seconds, so a kill lands while the env is starting.
const SLOW_START: &str = "\
services:
  migrate:
    image: slipway/demo-app:latest
    command: [migrate]
    environment: { MIGRATE_SLEEP_MS: \"4000\" }
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    depends_on:
      migrate: { condition: service_completed_successfully }
";

const LEASE_TTL: Duration = Duration::from_secs(3);

fn replica(name: &str, repo: &TestRepo, database_url: &str) -> Server {
    let extra = format!(
        "database_url = \"{database_url}\"\nlease_ttl = \"{}s\"\n",
        LEASE_TTL.as_secs()
    );
    Server::start(ServerOptions {
        extra: &extra,
        ..ServerOptions::basic(name, repo.path(), "compose.yml")
    })
}

fn starting_events(status: &serde_json::Value) -> usize {
    status["events"]
        .as_array()
        .map(|events| events.iter().filter(|e| e["phase"] == "Starting").count())
        .unwrap_or_default()
}

fn with_postgres(test: impl FnOnce(&str)) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(pg) = runtime.block_on(TestPostgres::start()) else {
        return; // No Postgres here and not CI: `start` said so.
    };
    test(pg.url());
    drop(pg);
}

#[test]
fn envs_asked_of_two_replicas_are_each_started_once() {
    with_postgres(|url| {
        let name = unique_name("repl");
        let repo = TestRepo::new();
        repo.write(
            "compose.yml",
            "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n",
        )
        .commit("base");
        let branches = ["b0", "b1", "b2", "b3"];
        for branch in branches {
            repo.git(&["branch", branch]);
        }
        let envs: Vec<String> = branches.iter().map(|b| format!("{name}-{b}")).collect();
        let _cleanup: Vec<EnvCleanup> = envs.iter().cloned().map(EnvCleanup).collect();
        let replicas = [replica(&name, &repo, url), replica(&name, &repo, url)];
        for (i, branch) in branches.iter().enumerate() {
            replicas[i % 2].cli_json(&["up", branch, "--repo", &name]);
        }
        for (i, env) in envs.iter().enumerate() {
            // Asked through the other replica: both see the one store.
            let ready =
                replicas[(i + 1) % 2].wait_until(env, "Ready", Duration::from_secs(90), |s| {
                    s["phase"] == "Ready"
                });
            assert_eq!(starting_events(&ready), 1, "{env} started once: {ready:#}");
            assert_eq!(containers_of(env), vec![format!("slipway-{env}-web")]);
        }
        // Resyncs on both replicas meanwhile change nothing.
        std::thread::sleep(Duration::from_secs(3));
        for env in &envs {
            let status = replicas[0].status(env);
            assert_eq!(status["phase"], "Ready");
            assert_eq!(starting_events(&status), 1, "{env}: {status:#}");
        }
        for env in &envs {
            replicas[1].cli_json(&["down", env, "--wait"]);
            assert!(containers_of(env).is_empty());
        }
    });
}

#[test]
fn a_replica_killed_mid_start_is_carried_on_by_another_within_the_lease() {
    with_postgres(|url| {
        let name = unique_name("failover");
        let repo = TestRepo::new();
        repo.write("compose.yml", SLOW_START).commit("slow start");
        let env = format!("{name}-main");
        let _cleanup = EnvCleanup(env.clone());
        let mut a = replica(&name, &repo, url);
        let b = replica(&name, &repo, url);

        a.cli_json(&["up", "main", "--repo", &name]);
        // Whichever replica took it, kill the one that did: a, or stop here if b did.
        a.wait_until(&env, "Starting", Duration::from_secs(60), |s| {
            s["phase"] == "Starting"
        });
        let killed = Instant::now();
        a.kill9();
        let ready = b.wait_until(&env, "Ready", LEASE_TTL + Duration::from_secs(60), |s| {
            assert_ne!(s["phase"], "Failed", "{s:#}");
            s["phase"] == "Ready"
        });
        let took = killed.elapsed();
        assert_eq!(
            containers_of(&env),
            vec![
                format!("slipway-{env}-migrate"),
                format!("slipway-{env}-web")
            ],
            "exactly the env's containers"
        );
        let (status, _) = http_get(&url_of(&ready, "web"));
        assert_eq!(status, 200);
        eprintln!("failover: Ready {took:?} after the kill (lease_ttl {LEASE_TTL:?})");
        b.cli_json(&["down", &env, "--wait"]);
        assert!(containers_of(&env).is_empty());
    });
}
