//! The engine's settings from the config: the `[[repo]]` tables (with the credentials git
//! uses), `[limits]` and the top-level keys of the engine (`data_dir`, `resync_interval`,
//! `ready_timeout`, `lease_ttl`, `test_log_retention`, `public_url`) and the quotas
//! (`max_envs`, `max_envs_per_user`, `max_memory`, and `max_envs` per repo).

use std::time::Duration;

use anyhow::{bail, Context as _};
use envmgr::compose::parse_bytes;
use envmgr::git::RepoPath;
use envmgr::names::RepoName;
use envmgr::rollout::ChannelSettings;
use envmgr::runtime::ResourceLimits;
use envmgr::settings::{EnvLimits, Quotas};
use envmgr::{EngineSettings, GitCredentials, GitToken, RepoSettings};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{env_secret, Config, LimitsConfig, RepoConfig};
use crate::github::GitHubSettings;

/// `[repo.queue]`, checked: a wrong value names the key and what it may be.
fn queue_settings(
    repo: &RepoName,
    config: &crate::config::QueueConfig,
) -> anyhow::Result<envmgr::settings::QueueSettings> {
    let defaults = envmgr::settings::QueueSettings::default();
    let target = match &config.target {
        Some(t) => envmgr::names::BranchName::from_user(t)
            .with_context(|| format!("[repo.queue] target of `{repo}`"))?,
        None => defaults.target.clone(),
    };
    let method = match &config.method {
        Some(m) => envmgr::settings::MergeMethod::parse(m.trim())
            .with_context(|| format!("[repo.queue] method of `{repo}`"))?,
        None => defaults.method,
    };
    let count = |key: &str, value: Option<usize>, default: usize| -> anyhow::Result<usize> {
        match value {
            Some(0) => bail!("[repo.queue] {key} of `{repo}` must be at least 1"),
            Some(n) if n > 64 => bail!("[repo.queue] {key} of `{repo}` is {n}: at most 64"),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    };
    let retries = config.retries.unwrap_or(defaults.retries);
    if retries > 5 {
        bail!("[repo.queue] retries of `{repo}` is {retries}: at most 5");
    }
    Ok(envmgr::settings::QueueSettings {
        target,
        method,
        parallel: count("parallel", config.parallel, defaults.parallel)?,
        batch: count("batch", config.batch, defaults.batch)?,
        retries,
        require_approvals: config
            .require_approvals
            .unwrap_or(defaults.require_approvals),
        required_checks: config
            .required_checks
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect(),
    })
}

/// `idle_sleep`, `idle_delete`, `warn_before` of a `[[repo]]`: "0" turns a step off.
fn idle_settings(repo: &RepoConfig) -> envmgr::settings::IdleSettings {
    let step = |d: Duration| (!d.is_zero()).then_some(d);
    envmgr::settings::IdleSettings {
        sleep_after: step(repo.idle_sleep),
        delete_after: step(repo.idle_delete),
        warn_before: step(repo.warn_before),
    }
}

/// The engine's settings, every `[[repo]]` and `[limits]` value checked; each error names
/// the key to fix.
pub fn engine_settings(config: &Config) -> anyhow::Result<EngineSettings> {
    let mut repos: Vec<RepoSettings> = Vec::new();
    for repo in &config.repos {
        let name = RepoName::parse(&repo.name)
            .with_context(|| format!("[[repo]] name `{}`", repo.name))?;
        if repos.iter().any(|r| r.name == name) {
            bail!("[[repo]] `{name}` is listed twice");
        }
        if repo.url.trim().is_empty() {
            bail!("[[repo]] `{name}` needs a url");
        }
        RepoPath::resolve("", &repo.env_file)
            .with_context(|| format!("[[repo]] `{name}` env_file"))?;
        let queue = queue_settings(&name, &repo.queue)?;
        let channels = repo
            .channels
            .iter()
            .map(|c| channel_settings(&name, c, config))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (i, c) in channels.iter().enumerate() {
            if channels[..i].iter().any(|other| other.name == c.name) {
                bail!(
                    "[[repo.channel]] `{}` of repo `{name}` is listed twice",
                    c.name
                );
            }
        }
        repos.push(RepoSettings {
            channels,
            name,
            url: repo.url.clone(),
            env_file: repo.env_file.clone(),
            default_ttl: repo.default_ttl,
            test_timeout: repo.test_timeout,
            secret_env: repo.secret_env.clone(),
            credentials: git_credentials(config, repo)?,
            queue,
            idle: idle_settings(repo),
            max_envs: repo.max_envs,
        });
    }
    let (default_limits, env_limits) = limits(&config.limits)?;
    let lease_ttl = config
        .lease_ttl
        .unwrap_or(envmgr::controller::DEFAULT_LEASE_TTL);
    if lease_ttl < Duration::from_secs(1) {
        anyhow::bail!(
            "lease_ttl = {} is too short: leases are renewed every third of it, so give at least 1s (default 15s)",
            humantime::format_duration(lease_ttl)
        );
    }
    Ok(EngineSettings {
        lease_ttl,
        data_dir: config.data_dir(),
        repos,
        default_limits,
        resync_interval: config.resync_interval.unwrap_or(Duration::from_secs(30)),
        ready_timeout: config.ready_timeout.unwrap_or(Duration::from_secs(300)),
        public_url: config.public_url(),
        test_log_retention: config.test_log_retention.unwrap_or(20),
        env_limits,
        quotas: quotas(config)?,
        image_retention: crate::runtime::DockerSettings::from_config(config)?.image_retention,
        // Set by `App::start`, which knows where the front door really listens.
        front_door: None,
    })
}

/// One `[[repo.channel]]`, checked: each error names the channel and the key to fix.
fn channel_settings(
    repo: &RepoName,
    channel: &crate::config::ChannelConfig,
    config: &Config,
) -> anyhow::Result<ChannelSettings> {
    use envmgr::rollout::model::{check_steps, parse_step};
    let name = channel.name.trim();
    let at = format!("[[repo.channel]] `{name}` of repo `{repo}`");
    let name_ok = !name.is_empty()
        && name.len() <= 20
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !["shared", "canary"].contains(&name)
        && !name.ends_with("-canary")
        && !name.ends_with("-shared")
        && !name.starts_with("pr-");
    if !name_ok {
        bail!(
            "{at}: a channel name is 1-20 lowercase letters, digits and `-`, starting with a \
             letter (it names the release env `{repo}-<name>`), not `shared` or `canary`, not ending in \
             `-shared` or `-canary`, not starting with `pr-`"
        );
    }
    // The release env's name must be a valid env name.
    envmgr::names::EnvName::parse(envmgr::names::EnvName::for_canary(repo, name).as_str())
        .with_context(|| format!("{at}: the env names it gives are not valid"))?;
    let mut settings = ChannelSettings::new(name);
    if let Some(steps) = &channel.steps {
        settings.steps = steps
            .iter()
            .map(|s| parse_step(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{at} steps: {e}"))?;
        check_steps(&settings.steps).map_err(|e| anyhow::anyhow!("{at} steps: {e}"))?;
    }
    if let Some(min) = channel.min_step_time {
        settings.min_step_time = min;
    }
    if let Some(max) = channel.max_step_time {
        settings.max_step_time = max;
    }
    if settings.max_step_time <= settings.min_step_time {
        bail!(
            "{at}: max_step_time ({}) must be longer than min_step_time ({})",
            humantime::format_duration(settings.max_step_time),
            humantime::format_duration(settings.min_step_time)
        );
    }
    settings.analysis.min_step_time = settings.min_step_time;
    settings.requires_approval = channel.requires_approval;
    if let Some(soak) = channel.soak {
        settings.soak = soak;
    }
    settings.windows = channel.windows.clone();
    settings.freeze = channel
        .freeze
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    for matcher in &channel.alerts {
        envmgr::rollout::ports::Matcher::parse(matcher)
            .map_err(|e| anyhow::anyhow!("{at} alerts: {e}"))?;
    }
    if !channel.alerts.is_empty() && config.alertmanager.is_none() {
        bail!("{at} names alerts but there is no [alertmanager] url to ask");
    }
    settings.alerts = channel.alerts.clone();
    for metric in &channel.metrics {
        metric
            .validate()
            .map_err(|e| anyhow::anyhow!("{at} metric `{}`: {e}", metric.name))?;
    }
    if !channel.metrics.is_empty() && config.prometheus.is_none() {
        bail!("{at} has [[repo.channel.metric]] queries but there is no [prometheus] url to ask");
    }
    settings.metrics = channel.metrics.clone();
    if let Some(outage) = channel.metric_outage {
        settings.metric_outage = outage;
    }
    Ok(settings)
}

/// The top-level `max_envs`, `max_envs_per_user` and `max_memory`.
fn quotas(config: &Config) -> anyhow::Result<Quotas> {
    let max_memory = match &config.max_memory {
        Some(text) => {
            let bytes = parse_bytes(text).map_err(|e| anyhow::anyhow!("max_memory: {e}"))?;
            if bytes <= 0 {
                bail!("max_memory = {text:?} must be more than 0 (leave it out for no cap)");
            }
            Some(bytes)
        }
        None => None,
    };
    Ok(Quotas {
        max_envs: config.max_envs,
        max_envs_per_user: config.max_envs_per_user,
        max_memory,
    })
}

/// What git authenticates with for `repo`: its `token` or `credentials_file`, else, for
/// a GitHub repository, the `[github]` token (`SLIPWAY_GITHUB_TOKEN`).
fn git_credentials(config: &Config, repo: &RepoConfig) -> anyhow::Result<Option<GitCredentials>> {
    const USERNAME: &str = "x-access-token";
    let credentials = |username: &str, token: &str| {
        let token = token.trim();
        (!token.is_empty()).then(|| GitCredentials {
            username: username.to_string(),
            token: GitToken::Fixed(SecretString::from(token.to_string())),
        })
    };
    match (&repo.token, &repo.credentials_file) {
        (Some(_), Some(_)) => bail!(
            "[[repo]] `{}` sets both token and credentials_file; keep one",
            repo.name
        ),
        (Some(token), None) => match credentials(USERNAME, token.expose_secret()) {
            Some(found) => Ok(Some(found)),
            None => bail!("[[repo]] `{}` token is empty", repo.name),
        },
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "[[repo]] `{}` credentials_file {}",
                    repo.name,
                    path.display()
                )
            })?;
            let text = text.trim();
            let found = match text.split_once(':') {
                Some((user, token)) if !user.is_empty() && !user.contains(char::is_whitespace) => {
                    credentials(user, token)
                }
                _ => credentials(USERNAME, text),
            };
            match found {
                Some(found) => Ok(Some(found)),
                None => bail!(
                    "[[repo]] `{}` credentials_file {} holds no token",
                    repo.name,
                    path.display()
                ),
            }
        }
        (None, None) => {
            let (Some(github_repo), Some(github)) = (&repo.github, &config.github) else {
                return Ok(None);
            };
            // As the forge does: the App when it is configured, else the token.
            if github.app_id.is_some() && github.private_key_path.is_some() {
                let settings = GitHubSettings::from_config(config)?.context("[github] is set")?;
                let tokens =
                    crate::github::forge::InstallationTokens::for_app(&settings, github_repo)?;
                return Ok(tokens.map(|tokens| GitCredentials {
                    username: USERNAME.to_string(),
                    token: GitToken::Minted(std::sync::Arc::new(tokens)),
                }));
            }
            let github_token = env_secret("SLIPWAY_GITHUB_TOKEN").or_else(|| github.token.clone());
            Ok(github_token.and_then(|t| credentials(USERNAME, t.expose_secret())))
        }
    }
}

/// The defaults and the env limits of `[limits]`, validated: every value between the floor
/// and its ceiling, each error naming its key.
fn limits(config: &LimitsConfig) -> anyhow::Result<(ResourceLimits, EnvLimits)> {
    use envmgr::compose::show_bytes;
    let floor = EnvLimits::FLOOR;
    let mut env = EnvLimits::default();
    let size = |key: &str, text: &Option<String>| -> anyhow::Result<Option<i64>> {
        text.as_deref()
            .map(|t| parse_bytes(t).map_err(|e| anyhow::anyhow!("[limits] {key}: {e}")))
            .transpose()
    };
    let nanos = |key: &str, cpus: Option<f64>| -> anyhow::Result<Option<i64>> {
        match cpus {
            None => Ok(None),
            Some(c) if c.is_finite() && c > 0.0 && c <= 1e6 => Ok(Some((c * 1e9) as i64)),
            Some(c) => bail!("[limits] {key} = {c} is not a number of CPUs"),
        }
    };
    // Ceilings first: the defaults are checked against them.
    if let Some(max) = size("max_memory", &config.max_memory)? {
        env.max.memory_bytes = max;
    }
    if let Some(max) = nanos("max_cpus", config.max_cpus)? {
        env.max.nano_cpus = max;
    }
    if let Some(max) = config.max_pids {
        env.max.pids = max;
    }
    let check = |key: &str,
                 value: i64,
                 min: i64,
                 max: i64,
                 max_key: &str,
                 show: &dyn Fn(i64) -> String| {
        if value < min {
            bail!("[limits] {key} = {} is below the floor of {}: Docker reads 0 as no limit, and less leaves a service unable to run", show(value), show(min));
        }
        if value > max {
            bail!("[limits] {key} = {} is above [limits] {max_key} = {}: lower {key} or raise {max_key}", show(value), show(max));
        }
        Ok(())
    };
    let cpus = |n: i64| format!("{}", n as f64 / 1e9);
    let plain = |n: i64| n.to_string();
    check(
        "max_memory",
        env.max.memory_bytes,
        floor.memory_bytes,
        i64::MAX,
        "",
        &show_bytes,
    )?;
    check(
        "max_cpus",
        env.max.nano_cpus,
        floor.nano_cpus,
        i64::MAX,
        "",
        &cpus,
    )?;
    check("max_pids", env.max.pids, floor.pids, i64::MAX, "", &plain)?;

    let mut defaults = ResourceLimits::default();
    // Unset defaults never exceed a lowered ceiling.
    defaults.memory_bytes = defaults.memory_bytes.min(env.max.memory_bytes);
    defaults.nano_cpus = defaults.nano_cpus.min(env.max.nano_cpus);
    defaults.pids = defaults.pids.min(env.max.pids);
    if let Some(memory) = size("memory", &config.memory)? {
        defaults.memory_bytes = memory;
    }
    if let Some(n) = nanos("cpus", config.cpus)? {
        defaults.nano_cpus = n;
    }
    if let Some(pids) = config.pids {
        defaults.pids = pids;
    }
    check(
        "memory",
        defaults.memory_bytes,
        floor.memory_bytes,
        env.max.memory_bytes,
        "max_memory",
        &show_bytes,
    )?;
    check(
        "cpus",
        defaults.nano_cpus,
        floor.nano_cpus,
        env.max.nano_cpus,
        "max_cpus",
        &cpus,
    )?;
    check(
        "pids",
        defaults.pids,
        floor.pids,
        env.max.pids,
        "max_pids",
        &plain,
    )?;

    if let Some(grace) = config.max_stop_grace {
        env.max_stop_grace = grace;
    }
    if let Some(bytes) = size("max_compose_size", &config.max_compose_size)? {
        if bytes < 1024 {
            bail!("[limits] max_compose_size = {bytes} bytes is too small for any compose file: use at least 1k");
        }
        env.max_compose_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    let count = |key: &str, value: Option<usize>, min: usize, default: usize| match value {
        Some(n) if n < min => bail!("[limits] {key} = {n} must be at least {min}"),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    env.max_services = count("max_services", config.max_services, 1, env.max_services)?;
    env.max_volumes = count("max_volumes", config.max_volumes, 0, env.max_volumes)?;
    env.max_published_ports = count(
        "max_published_ports",
        config.max_published_ports,
        0,
        env.max_published_ports,
    )?;
    env.parallel_builds = count(
        "parallel_builds",
        config.parallel_builds,
        1,
        env.parallel_builds,
    )?;
    Ok((defaults, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_credentials_come_from_token_credentials_file_or_the_github_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cred"), "deploy:tok-from-file\n").unwrap();
        std::fs::write(dir.path().join("bare"), "  tok-bare \n").unwrap();
        let repo =
            |extra: &str| format!("[[repo]]\nname = \"a\"\nurl = \"https://h/a.git\"\n{extra}\n");
        let credentials = |text: &str| {
            let path = dir.path().join("slipway.toml");
            std::fs::write(&path, text).unwrap();
            let config = Config::load(&path)?;
            engine_settings(&config).map(|s| s.repos[0].credentials.clone())
        };
        let found = credentials(&repo("token = \"tok-key\"")).unwrap().unwrap();
        assert_eq!(
            (
                found.username.as_str(),
                found.token.fixed().unwrap().expose_secret()
            ),
            ("x-access-token", "tok-key")
        );
        let found = credentials(&repo("credentials_file = \"cred\""))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                found.username.as_str(),
                found.token.fixed().unwrap().expose_secret()
            ),
            ("deploy", "tok-from-file")
        );
        let found = credentials(&repo("credentials_file = \"bare\""))
            .unwrap()
            .unwrap();
        assert_eq!(found.token.fixed().unwrap().expose_secret(), "tok-bare");
        assert!(credentials(&repo("")).unwrap().is_none());
        if std::env::var_os("SLIPWAY_GITHUB_TOKEN").is_none() {
            let github = format!(
                "{}[github]\nwebhook_secret = \"w\"\ntoken = \"tok-github\"\n",
                repo("github = \"o/a\"")
            );
            let found = credentials(&github).unwrap().unwrap();
            assert_eq!(found.token.fixed().unwrap().expose_secret(), "tok-github");
        }
        let both = credentials(&repo("token = \"t\"\ncredentials_file = \"cred\""));
        assert!(both.unwrap_err().to_string().contains("both"));
        let empty = credentials(&repo("token = \" \""));
        assert!(empty.unwrap_err().to_string().contains("empty"));
        let missing = credentials(&repo("credentials_file = \"nope\"")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("credentials_file"),
            "{missing:#}"
        );
        // Debug output (logs, panics) never shows the token.
        let found = credentials(&repo("token = \"tok-hidden\"")).unwrap();
        assert!(!format!("{found:?}").contains("tok-hidden"));
    }

    #[test]
    fn limits_are_validated_and_each_error_names_its_key() {
        let limits = |text: &str| {
            limits(
                &toml::from_str::<Config>(&format!("[limits]\n{text}\n"))
                    .unwrap()
                    .limits,
            )
        };
        let (defaults, env) = limits("max_memory = \"1g\"\nmax_services = 3\nmax_stop_grace = \"10s\"\nmax_compose_size = \"64k\"\nparallel_builds = 4").unwrap();
        assert_eq!(env.max.memory_bytes, 1 << 30);
        assert_eq!((env.max_services, env.parallel_builds), (3, 4));
        assert_eq!(env.max_stop_grace, Duration::from_secs(10));
        assert_eq!(env.max_compose_bytes, 64 * 1024);
        assert_eq!(defaults.memory_bytes, 512 << 20);
        // An unset default never exceeds a lowered ceiling.
        let (defaults, _) = limits("max_memory = \"256m\"").unwrap();
        assert_eq!(defaults.memory_bytes, 256 << 20);
        for (text, key) in [
            ("memory = \"0\"", "memory"),
            ("memory = \"16g\"", "max_memory"),
            ("cpus = 0.0", "cpus"),
            ("cpus = 8.0", "max_cpus"),
            ("cpus = nan", "cpus"),
            ("pids = 0", "pids"),
            ("pids = -1", "pids"),
            ("pids = 5000", "max_pids"),
            ("max_memory = \"1k\"", "max_memory"),
            ("max_cpus = 0.0", "max_cpus"),
            ("max_pids = 1", "max_pids"),
            ("max_compose_size = \"10\"", "max_compose_size"),
            ("max_services = 0", "max_services"),
            ("parallel_builds = 0", "parallel_builds"),
        ] {
            let err = limits(text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("[limits] {key}")) || err.contains(key),
                "{text}: {err}"
            );
            assert!(err.starts_with("[limits]"), "{text}: {err}");
        }
    }

    #[test]
    fn bad_repos_are_refused() {
        let config: Config =
            toml::from_str("[[repo]]\nname = \"Bad Name\"\nurl = \"/x\"\n").unwrap();
        assert!(engine_settings(&config).is_err());
        let config: Config =
            toml::from_str("[[repo]]\nname = \"a\"\nurl = \"/x\"\nenv_file = \"../c.yml\"\n")
                .unwrap();
        assert!(engine_settings(&config).is_err());
    }
}
