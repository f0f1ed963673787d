//! The test runner: takes queued test runs and runs the env's integration tests (its compose
//! services in the `test` profile) as one-shot jobs on the env's network. The output is
//! streamed into a gzip log under the data dir and through the snippet scanner, so memory
//! stays bounded whatever the tests print; a JUnit report, when a test writes one, becomes
//! per-test results; the run's outcome and snippets go to the store for every surface.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::compose::plan::{plan, PlanInput};
use crate::compose::{ComposeFile, DEFAULT_REPORT_PATH};
use crate::controller::{Action, Reconciler, Work};
use crate::git::{GitMirrors, RepoPath};
use crate::junit;
use crate::names::{CommitSha, EnvName};
use crate::runtime::{JobOutcome, JobSpec, Runtime};
use crate::settings::EngineSettings;
use crate::snippet::{self, ExitInfo, FailedTest, LogScanner, SnippetInput, Target};
use crate::store::{Desired, EnvRecord, Phase, RunOutcome, RunStatus, Store, TestResult, TestRun};

/// How often an env's queued run looks again at an env still on its way to Ready.
const WAIT_FOR_ENV: Duration = Duration::from_secs(1);

/// The lease kind and metrics label of test runs; keys are env names.
pub const KIND: &str = "tests";

/// The id of the job running `service` of test run `run` (it names the job's container).
pub(crate) fn job_id(run: i64, service: &str) -> String {
    format!("run{run}-{service}")
}

/// The test run a job id names, if it is one ([`job_id`]).
pub(crate) fn run_of_job(id: &str) -> Option<i64> {
    id.strip_prefix("run")?.split_once('-')?.0.parse().ok()
}

/// Runs each env's queued test runs one after another (envs in parallel), on the shared
/// controller: one replica at a time runs an env's tests, under the env's `tests` lease.
pub(crate) struct TestRunner {
    settings: Arc<EngineSettings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
    git: GitMirrors,
}

impl TestRunner {
    pub fn new(settings: Arc<EngineSettings>, store: Store, runtime: Arc<dyn Runtime>) -> Self {
        let git = GitMirrors::new(&settings.data_dir);
        TestRunner {
            settings,
            store,
            runtime,
            git,
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for TestRunner {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Envs with a run queued, or one marked running (its runner may have died).
    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let envs = self.store.envs_with_open_runs().await?;
        Ok(envs.iter().map(EnvName::to_string).collect())
    }

    async fn reconcile(&self, key: &str, _work: &Work) -> anyhow::Result<Action> {
        let env = EnvName::parse(key)?;
        // Under this env's lease nothing else runs its tests: a run still marked running
        // was cut off (its replica died or lost the lease) and starts again from the top.
        let interrupted = self.store.requeue_interrupted_runs(&env).await?;
        if interrupted > 0 {
            info!(env = %env, runs = interrupted, "requeued test runs that were cut off");
        }
        let Some(run) = self.store.queued_runs(&env).await?.into_iter().next() else {
            return Ok(Action::AwaitChange);
        };
        match self.execute(run).await {
            Ok(true) => Ok(Action::Requeue(Duration::ZERO)),
            Ok(false) => Ok(Action::Requeue(WAIT_FOR_ENV)),
            Err(e) => Err(e),
        }
    }
}

impl TestRunner {
    /// Carries out one run (`true`), or leaves it queued while its env is still on its way.
    async fn execute(&self, run: TestRun) -> anyhow::Result<bool> {
        let name = run.env.clone();
        let env = self.store.get(&name).await?;
        let env = match env {
            Some(env) if env.desired == Desired::Running && env.phase == Phase::Ready => env,
            Some(env) if env.desired == Desired::Running && env.phase.in_progress() => {
                return Ok(false)
            }
            Some(env) => {
                let why = match env.phase {
                    Phase::Failed => {
                        format!("the environment failed: {}", env.reason.unwrap_or_default())
                    }
                    _ => "the environment is deleted".to_string(),
                };
                return self.give_up(&run, &why).await.map(|()| true);
            }
            None => {
                return self
                    .give_up(&run, "the environment does not exist")
                    .await
                    .map(|()| true)
            }
        };
        let Some(commit) = env.commit.clone() else {
            return self
                .give_up(&run, "the environment has no commit yet")
                .await
                .map(|()| true);
        };
        if !self.store.start_run(run.id, Some(&commit)).await? {
            return Ok(true);
        }
        info!(env = %name, run = run.id, commit = %commit.short(), "running tests");
        let outcome = match self.run_tests(&run, &env, &commit).await {
            Ok(outcome) => outcome,
            Err(e) => RunOutcome {
                status: Some(RunStatus::Error),
                headline: format!("could not run the tests: {e:#}"),
                ..Default::default()
            },
        };
        self.store.finish_run(run.id, &outcome).await?;
        info!(env = %name, run = run.id, status = ?outcome.status, headline = %outcome.headline, "tests finished");
        self.apply_retention(&name).await;
        Ok(true)
    }

    async fn give_up(&self, run: &TestRun, why: &str) -> anyhow::Result<()> {
        if self.store.start_run(run.id, None).await? {
            let outcome = RunOutcome {
                status: Some(RunStatus::Error),
                headline: why.to_string(),
                ..Default::default()
            };
            self.store.finish_run(run.id, &outcome).await?;
        }
        Ok(())
    }

    async fn run_tests(
        &self,
        run: &TestRun,
        env: &EnvRecord,
        commit: &CommitSha,
    ) -> anyhow::Result<RunOutcome> {
        let repo = self
            .settings
            .repo(&env.repo)
            .context("the repo is no longer configured")?
            .clone();
        let compose_path = RepoPath::resolve("", &repo.env_file)?;
        let bytes = self
            .git
            .read_file(&repo.name, commit, &compose_path)
            .await?;
        let mut file = ComposeFile::parse_limited(&bytes, &self.settings.env_limits)?;
        let tests: Vec<_> = file.test_services().into_iter().cloned().collect();
        if tests.is_empty() {
            anyhow::bail!("the compose file has no service in the `test` profile");
        }
        let timeout = file
            .tests
            .timeout
            .unwrap_or(repo.test_timeout)
            .min(repo.test_timeout);
        let report_path = file
            .tests
            .report
            .clone()
            .unwrap_or_else(|| DEFAULT_REPORT_PATH.to_string());
        file.services = tests;
        let input = PlanInput {
            env: &env.name,
            repo: &repo.name,
            commit,
            compose_path: &compose_path,
            file: &file,
            default_limits: self.settings.default_limits,
        };
        let plan = plan(input, &self.git).await?;
        for (_, source) in &plan.images {
            self.runtime.prepare_image(source, Arc::new(|_| {})).await?;
        }
        // Values of the variables the repo marks secret, wherever they are set.
        let mut secrets: Vec<String> = plan
            .spec
            .services
            .iter()
            .flat_map(|s| s.environment.iter())
            .filter(|(k, _)| repo.secret_env.iter().any(|name| name == *k))
            .map(|(_, v)| v.clone())
            .collect();
        secrets.sort();
        secrets.dedup();

        let previous_failures = if run.failed_only {
            self.previous_failures(&env.name, run.id).await?
        } else {
            Vec::new()
        };
        let log_path = self.log_path(&env.name, run.id);
        let mut scanner = LogScanner::with_secrets(&secrets);
        let mut log = LogFile::create(&log_path)?;
        let mut last = JobOutcome::default();
        let mut results = Vec::new();
        for service in &plan.spec.services {
            let mut service = service.clone();
            service
                .environment
                .insert("SLIPWAY_JUNIT_PATH".into(), report_path.clone());
            service
                .environment
                .insert("SLIPWAY_ENV".into(), env.name.to_string());
            service
                .environment
                .insert("SLIPWAY_RUN_ID".into(), run.id.to_string());
            if run.failed_only {
                service
                    .environment
                    .insert("SLIPWAY_FAILED_TESTS".into(), previous_failures.join("\n"));
            }
            let job = JobSpec {
                id: job_id(run.id, service.name.as_str()),
                service,
                timeout,
                collect: Some(report_path.clone()),
            };
            let (tx, mut rx) = mpsc::channel::<Bytes>(64);
            let runtime = self.runtime.clone();
            let spec = plan.spec.clone();
            let job_task = tokio::spawn(async move { runtime.run_job(&spec, &job, tx).await });
            while let Some(chunk) = rx.recv().await {
                scanner.push(&chunk);
                log.write(&chunk)?;
            }
            let outcome = job_task.await.context("the test job panicked")??;
            if let Some(report) = outcome.collected.as_deref() {
                match junit::parse(report) {
                    Ok(report) => results.extend(report.tests.iter().map(result_of)),
                    Err(e) => {
                        warn!(env = %env.name, run = run.id, error = %e, "unreadable JUnit report")
                    }
                }
            }
            let failed =
                outcome.timed_out || outcome.error.is_some() || outcome.exit_code != Some(0);
            last = outcome;
            if failed {
                break;
            }
        }
        log.finish()?;

        let failed_tests: Vec<FailedTest> = results
            .iter()
            .filter(|r: &&TestResult| r.outcome == "failed" || r.outcome == "errored")
            .map(|r| FailedTest {
                name: r.name.clone(),
                classname: None,
                message: r.message.clone(),
                details: None,
                file: r.file.clone(),
                line: r.line,
            })
            .collect();
        let status = if last.timed_out {
            RunStatus::TimedOut
        } else if last.error.is_some() && last.exit_code.is_none() {
            RunStatus::Error
        } else if last.exit_code == Some(0) && failed_tests.is_empty() {
            RunStatus::Passed
        } else {
            RunStatus::Failed
        };
        let headline = headline(status, &last, &results, timeout);
        let log_url = format!(
            "{}/api/v1/envs/{}/runs/{}/log",
            self.settings.public_url, env.name, run.id
        );
        let findings = scanner.finish();
        let exit = ExitInfo {
            code: last.exit_code.unwrap_or(-1),
            oom_killed: last.oom_killed,
            timed_out: last.timed_out,
            error: last.error.clone(),
        };
        let snippet_input = SnippetInput {
            exit: Some(exit),
            failed_tests: &failed_tests,
            secrets: &secrets,
            log_url: &log_url,
        };
        let render = |target| {
            (status != RunStatus::Passed)
                .then(|| snippet::render(&findings, &snippet_input, target))
        };
        Ok(RunOutcome {
            status: Some(status),
            exit_code: last.exit_code,
            headline,
            results,
            snippet_check: render(Target::CheckRunText),
            snippet_comment: render(Target::Plain(6000)),
            snippet_chat: render(Target::DiscordMessage),
            log_path: Some(log_path.to_string_lossy().into_owned()),
        })
    }

    /// The names of the tests that failed in the env's previous finished run.
    async fn previous_failures(&self, env: &EnvName, before: i64) -> anyhow::Result<Vec<String>> {
        let runs = self.store.runs(env, 20).await?;
        let previous = runs
            .iter()
            .find(|r| r.id < before && r.status.is_finished() && !r.results.is_empty());
        Ok(previous
            .map(|r| r.failed_tests().map(|t| t.name.clone()).collect())
            .unwrap_or_default())
    }

    pub(crate) fn log_path(&self, env: &EnvName, run: i64) -> PathBuf {
        run_log_path(&self.settings, env, run)
    }

    /// Deletes the logs of runs beyond the retention limit (their results stay).
    async fn apply_retention(&self, env: &EnvName) {
        let Ok(old) = self
            .store
            .runs_past_retention(env, self.settings.test_log_retention as i64)
            .await
        else {
            return;
        };
        for run in old {
            if let Some(path) = &run.log_path {
                let _ = std::fs::remove_file(path);
            }
            let _ = self.store.forget_run_log(run.id).await;
        }
    }
}

/// Where the full log of a run is kept.
pub fn run_log_path(settings: &EngineSettings, env: &EnvName, run: i64) -> PathBuf {
    settings
        .data_dir
        .join("runs")
        .join(env.as_str())
        .join(format!("{run}.log.gz"))
}

fn result_of(case: &junit::TestCase) -> TestResult {
    TestResult {
        name: case.full_name(),
        outcome: match case.outcome {
            junit::Outcome::Passed => "passed",
            junit::Outcome::Failed => "failed",
            junit::Outcome::Errored => "errored",
            junit::Outcome::Skipped => "skipped",
        }
        .to_string(),
        duration_ms: case.duration.map(|d| d.as_millis() as u64),
        message: case.message.clone(),
        file: case.file.clone(),
        line: case.line,
    }
}

fn headline(
    status: RunStatus,
    last: &JobOutcome,
    results: &[TestResult],
    timeout: Duration,
) -> String {
    let failed = results
        .iter()
        .filter(|r| r.outcome == "failed" || r.outcome == "errored")
        .count();
    let counted = results.iter().filter(|r| r.outcome != "skipped").count();
    match status {
        RunStatus::TimedOut => format!("timed out after {}", humantime::format_duration(timeout)),
        RunStatus::Error => format!("could not run: {}", last.error.clone().unwrap_or_default()),
        _ if last.oom_killed => "killed: out of memory".to_string(),
        RunStatus::Passed if counted > 0 => format!("{counted} tests passed"),
        RunStatus::Passed => "tests passed".to_string(),
        _ if failed > 0 => format!("{failed} of {counted} tests failed"),
        _ => format!("exited with code {}", last.exit_code.unwrap_or(-1)),
    }
}

/// A gzip log file written as output arrives.
struct LogFile {
    encoder: GzEncoder<std::fs::File>,
}

impl LogFile {
    fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            encoder: GzEncoder::new(file, flate2::Compression::fast()),
        })
    }

    fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.encoder
            .write_all(chunk)
            .context("writing the test log")
    }

    fn finish(self) -> anyhow::Result<()> {
        self.encoder.finish().context("finishing the test log")?;
        Ok(())
    }
}

#[cfg(test)]
mod job_id_tests {
    use super::*;

    #[test]
    fn job_ids_name_their_run() {
        assert_eq!(run_of_job(&job_id(12, "tests")), Some(12));
        assert_eq!(run_of_job(&job_id(7, "e2e-run3")), Some(7));
        assert_eq!(run_of_job("tests"), None);
        assert_eq!(run_of_job("runx-tests"), None);
    }
}
