//! A throwaway Postgres for tests.
//!
//! [`TestPostgres::start`] gives each test process its own cluster: `initdb` into a temp
//! dir, `pg_ctl start` on 127.0.0.1 with a free port (trust auth, `fsync=off`), one database,
//! and `pg_ctl stop -m immediate` plus removal of the dir when the guard is dropped. As root
//! (initdb refuses root) the cluster runs as the `postgres` system user.
//!
//! With `SLIPWAY_TEST_DATABASE_URL=postgres://…` set, no cluster is started: a fresh database
//! is created in that server for the test run and dropped again afterwards.
//!
//! Without Postgres binaries the Postgres variant is skipped with a loud message, except on
//! CI (`CI` set), where it fails: CI must run every backend.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::{Connection, Executor, PgConnection};

/// Use this server instead of starting a cluster.
pub const URL_VAR: &str = "SLIPWAY_TEST_DATABASE_URL";

/// The system user the cluster runs as when the tests run as root.
const PG_USER: &str = "postgres";

/// A Postgres database that exists as long as this guard does.
pub struct TestPostgres {
    url: String,
    // Dropped after `url`; stops the cluster or drops the database.
    _owner: Owner,
}

// Held for their `Drop` only (stop the cluster, drop the database).
#[allow(dead_code)]
enum Owner {
    Cluster(Cluster),
    External(ExternalDatabase),
}

impl TestPostgres {
    /// A fresh, empty database, or `None` when there is no Postgres here and this is not CI
    /// (after saying so loudly on stderr). Panics with a clear message on anything else.
    pub async fn start() -> Option<Self> {
        if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
            return Some(Self::in_external_server(url).await);
        }
        let Some(bin) = find_bin_dir() else {
            let message = format!(
                "no Postgres binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin: \
                 install them (`apt-get install postgresql`) or set {URL_VAR}=postgres://…"
            );
            if in_ci() {
                panic!("{message}. CI must run the Postgres tests.");
            }
            // Straight to the stderr handle: `eprintln!` would be captured by the test harness.
            let bar = "!".repeat(78);
            let _ = writeln!(
                std::io::stderr(),
                "\n{bar}\n!!! SKIPPING the Postgres variant of this test:\n!!! {message}\n{bar}\n"
            );
            return None;
        };
        let cluster = match tokio::task::spawn_blocking(move || Cluster::start(&bin)).await {
            Ok(cluster) => cluster,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        const DATABASE: &str = "slipway_test";
        create_database(&cluster.url("postgres"), DATABASE).await;
        Some(Self {
            url: cluster.url(DATABASE),
            _owner: Owner::Cluster(cluster),
        })
    }

    /// `postgres://…` of the database, for `Store::connect`.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn in_external_server(admin_url: String) -> Self {
        assert!(
            admin_url.starts_with("postgres://") || admin_url.starts_with("postgresql://"),
            "{URL_VAR} must be a postgres:// URL, not `{admin_url}`"
        );
        let database = format!(
            "slipway_test_{}_{:08x}",
            std::process::id(),
            random_u64() as u32
        );
        create_database(&admin_url, &database).await;
        Self {
            url: with_database(&admin_url, &database),
            _owner: Owner::External(ExternalDatabase {
                admin_url,
                database,
            }),
        }
    }
}

/// A cluster of our own in a temp dir.
struct Cluster {
    pg_ctl: PathBuf,
    data: PathBuf,
    port: u16,
    /// `Some("postgres")` when we are root.
    run_as: Option<&'static str>,
    /// Removed after the cluster is stopped (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(bin: &Path) -> Self {
        let run_as = (effective_uid() == 0).then_some(PG_USER);
        let dir = tempfile::Builder::new()
            .prefix("slipway-pg-")
            .tempdir()
            .expect("creating a temp dir for Postgres");
        if let Some(user) = run_as {
            let (uid, gid) = user_ids(user);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown of the Postgres temp dir");
        }
        let mut cluster = Cluster {
            pg_ctl: bin.join("pg_ctl"),
            data: dir.path().join("data"),
            port: 0,
            run_as,
            dir,
        };

        let initdb = bin.join("initdb");
        let out = cluster.run(
            &initdb,
            &[
                "-D".as_ref(),
                cluster.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        if !out.status.success() {
            panic!("{} failed:\n{}", initdb.display(), output_text(&out));
        }

        let log = cluster.dir.path().join("postgres.log");
        // A port found free can be taken before the server binds it: try a few.
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                cluster.dir.path().display()
            );
            let out = cluster.run(
                &cluster.pg_ctl,
                &[
                    "-D".as_ref(),
                    cluster.data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "start".as_ref(),
                ],
            );
            if out.status.success() {
                cluster.port = port;
                return cluster;
            }
            if attempt == ATTEMPTS {
                let server_log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "pg_ctl start failed {ATTEMPTS} times:\n{}\nserver log:\n{server_log}",
                    output_text(&out)
                );
            }
        }
        unreachable!()
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs a Postgres program, as the `postgres` user when we are root.
    fn run(&self, program: &Path, args: &[&std::ffi::OsStr]) -> Output {
        let mut command = match self.run_as {
            None => Command::new(program),
            Some(user) if find_on_path("runuser").is_some() => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups")
                    .arg(program);
                c
            }
        };
        command
            .args(args)
            // The `postgres` user may not be allowed into the test's working directory.
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.run(
            &self.pg_ctl,
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        if !out.status.success() && self.port != 0 {
            eprintln!("stopping the test Postgres failed:\n{}", output_text(&out));
        }
    }
}

/// A database we created in someone else's server.
struct ExternalDatabase {
    admin_url: String,
    database: String,
}

impl Drop for ExternalDatabase {
    fn drop(&mut self) {
        let (url, database) = (self.admin_url.clone(), self.database.clone());
        // Drop may run inside the test's runtime, which must not be blocked on: use a thread
        // with a runtime of its own.
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database")
                .block_on(async {
                    let mut conn = PgConnection::connect(&url).await?;
                    // FORCE (Postgres 13+) ends connections a leaked pool still holds.
                    let forced = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                    if conn.execute(forced.as_str()).await.is_err() {
                        let plain = format!("DROP DATABASE IF EXISTS \"{database}\"");
                        conn.execute(plain.as_str()).await?;
                    }
                    Ok::<_, sqlx::Error>(())
                })
        })
        .join();
        if !matches!(outcome, Ok(Ok(()))) {
            eprintln!(
                "could not drop test database {} ({outcome:?})",
                self.database
            );
        }
    }
}

async fn create_database(admin_url: &str, database: &str) {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to test Postgres at {admin_url}: {e}"));
    conn.execute(format!("CREATE DATABASE \"{database}\"").as_str())
        .await
        .unwrap_or_else(|e| panic!("creating test database {database}: {e}"));
    let _ = conn.close().await;
}

/// `url` with its database (path) replaced by `database`; the query string is kept.
fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let query_start = rest.find('?').unwrap_or(rest.len());
    let authority_end = rest[..query_start].find('/').unwrap_or(query_start);
    format!(
        "{}{}/{database}{}",
        &url[..scheme_end],
        &rest[..authority_end],
        &rest[query_start..]
    )
}

/// The directory holding `initdb` and `pg_ctl`: from PATH, else the newest Debian install.
fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = find_on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)) {
        if has_both(&dir) {
            return Some(dir);
        }
    }
    let mut debian: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let version = entry
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(|part| part.parse().unwrap_or(0))
                .collect();
            (version, entry.path().join("bin"))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    Some(PathBuf::from("/usr/local/pgsql/bin")).filter(|dir| has_both(dir))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn effective_uid() -> u32 {
    // /proc/self belongs to the process's effective user.
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return meta.uid();
    }
    let out = Command::new("id")
        .arg("-u")
        .output()
        .expect("running `id -u`");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("`id -u` prints a number")
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => (uid, gid),
        _ => panic!(
            "the tests run as root and initdb refuses root, so the test cluster runs as the \
             `{user}` user, which does not exist: install the `postgresql` package (it creates \
             the user), `useradd --system {user}`, or set {URL_VAR}=postgres://…"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port")
        .port()
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}
