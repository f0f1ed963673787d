//! One engine configuration for tests on the fake runtime: a repo `name` at `url` whose
//! envs come from `compose.yml`, quick resyncs; tests change the fields they are about.

use std::path::Path;
use std::time::Duration;

use envmgr::names::RepoName;
use envmgr::settings::{EngineSettings, IdleSettings, RepoSettings};

pub fn settings(data_dir: &Path, name: RepoName, url: &Path, idle: IdleSettings) -> EngineSettings {
    EngineSettings {
        data_dir: data_dir.to_path_buf(),
        repos: vec![RepoSettings {
            channels: Vec::new(),
            name,
            url: url.display().to_string(),
            env_file: "compose.yml".into(),
            default_ttl: Duration::from_secs(3600),
            test_timeout: Duration::from_secs(60),
            secret_env: vec![],
            credentials: None,
            queue: Default::default(),
            max_envs: None,
            idle,
        }],
        default_limits: Default::default(),
        resync_interval: Duration::from_millis(300),
        lease_ttl: Duration::from_secs(15),
        ready_timeout: Duration::from_secs(10),
        public_url: "http://slipway.example.com".into(),
        test_log_retention: 3,
        env_limits: Default::default(),
        quotas: Default::default(),
        image_retention: None,
        front_door: None,
    }
}
