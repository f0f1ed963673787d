//! A Slipway linked to a repository of the GitHub world model, for the pull-request tests:
//! in a `slipway serve` process (`github_prs`) or in the test process (`surfaces`).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::github::*;
use super::*;

/// The webhook secret of every [`Setup`].
pub const SECRET: &str = "webhook-secret-for-tests";
const LIGHT_COMPOSE: &str =
    "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n";

/// A Slipway (a process, or in the test process) linked to GitHub repository `acme/<name>`
/// of a fresh world model, where alice may write and bob may read.
pub struct Setup<S = Server> {
    pub world: GitHubWorld,
    pub repo: TestRepo,
    pub server: S,
    pub name: String,
    pub github: String,
}

/// A [`Setup`] whose Slipway `start` starts, serving either the demo compose file or a
/// one-service one; `repo_settings` go into its `[[repo]]`, and it sweeps the open pull
/// requests `sweep_every`.
pub fn setup_with<S: SlipwayApi>(
    demo_files: bool,
    repo_settings: &str,
    sweep_every: &str,
    start: impl FnOnce(ServerOptions) -> S,
) -> Setup<S> {
    setup_with_tables(demo_files, repo_settings, sweep_every, "", start)
}

/// [`setup_with`], with `tables` (e.g. a `[proxy]` table) added to the config.
pub fn setup_with_tables<S: SlipwayApi>(
    demo_files: bool,
    repo_settings: &str,
    sweep_every: &str,
    tables: &str,
    start: impl FnOnce(ServerOptions) -> S,
) -> Setup<S> {
    let name = unique_name("gh");
    let github = format!("acme/{name}");
    let world = GitHubWorld::start();
    world.add_repo(&github);
    world.set_permission(&github, "alice", "write");
    world.set_permission(&github, "bob", "read");
    let repo = TestRepo::new();
    if demo_files {
        repo.with_demo_files();
    } else {
        repo.write("compose.yml", LIGHT_COMPOSE);
    }
    repo.commit("base");
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"ghp_testtoken\"\nresync_interval = \"{sweep_every}\"\n{tables}",
        world.url()
    );
    let repo_extra =
        format!("github = \"{github}\"\nsecret_env = [\"API_TOKEN\"]\n{repo_settings}");
    let server = start(ServerOptions {
        repo_name: &name,
        repo_url: repo.path(),
        env_file: if demo_files {
            "compose/demo.yml"
        } else {
            "compose.yml"
        },
        extra: "",
        repo_extra: &repo_extra,
        tables: &tables,
    });
    Setup {
        world,
        repo,
        server,
        name,
        github,
    }
}

impl<S: SlipwayApi> Setup<S> {
    /// A new commit on branch `feature`, published as the PR's head ref like GitHub does.
    pub fn push_feature(&self, number: u64, greeting: &str) -> String {
        let branch = self.repo.git(&["branch", "--show-current"]);
        if branch.trim() != "feature" {
            self.repo.git(&["checkout", "-q", "-B", "feature"]);
        }
        self.repo.write("greeting.txt", greeting);
        if self
            .repo
            .path()
            .join("compose/demo/web/Dockerfile")
            .exists()
        {
            let dockerfile = format!("FROM slipway/demo-app:latest\nENV GREETING=\"{greeting}\"\n");
            self.repo.write("compose/demo/web/Dockerfile", &dockerfile);
        }
        let sha = self.repo.commit(greeting);
        self.repo
            .git(&["update-ref", &format!("refs/pull/{number}/head"), &sha]);
        sha
    }

    pub fn send(&self, event: &str, delivery: &str, payload: &Value) -> (u16, String) {
        send_webhook(self.server.url(), SECRET, event, delivery, payload)
    }

    pub fn pr_payload(
        &self,
        action: &str,
        number: u64,
        sha: &str,
        head_repo: &str,
        sender: &str,
    ) -> Value {
        let clone_url = self.repo.path().display().to_string();
        pull_request_payload(
            action,
            &self.github,
            &clone_url,
            number,
            sha,
            "feature",
            head_repo,
            sender,
        )
    }

    pub fn env(&self, number: u64) -> String {
        format!("{}-pr-{number}", self.name)
    }

    pub fn wait_for_world(&self, what: &str, check: impl Fn(&GitHubWorld) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !check(&self.world) {
            assert!(
                Instant::now() < deadline,
                "GitHub never showed {what}; requests: {:#?}\n{}",
                self.world.requests(),
                self.server.tail_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the env exists and `check` holds.
    pub fn wait_for_env(&self, env: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.env_status(env).filter(|s| check(s)) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{env} never became {what}: {:?}\n{}",
                self.env_status(env),
                self.server.tail_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Status of the env, or `None` when Slipway has no such env.
    pub fn env_status(&self, env: &str) -> Option<Value> {
        let out = self.server.cli(&["status", env, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
}

/// The comments Slipway keeps up to date on pull request `number` (not its replies).
pub fn slipway_comments(world: &GitHubWorld, github: &str, number: u64) -> Vec<Comment> {
    world
        .comments(github, number)
        .into_iter()
        .filter(|c| c.body.contains("<!-- slipway:env -->"))
        .collect()
}
