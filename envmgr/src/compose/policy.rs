//! What a compose file from a branch may not ask for. Anyone who can push a branch can write
//! the compose file, so anything that reaches the host (privileges, host namespaces, host
//! paths, the Docker socket, devices) is refused before a single resource is created.

use serde_yaml::{Mapping, Value};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("refused by policy: {location} `{key}`: {why}")]
pub struct PolicyViolation {
    /// `service \`web\`` or `volume \`data\``.
    pub location: String,
    pub key: String,
    pub why: String,
}

pub fn check(root: &Mapping) -> Result<(), PolicyViolation> {
    if let Some(Value::Mapping(services)) = root.get("services") {
        for (name, body) in services {
            let location = format!("service `{}`", name.as_str().unwrap_or("?"));
            if let Value::Mapping(service) = body {
                check_service(&location, service)?;
            }
        }
    }
    if let Some(Value::Mapping(volumes)) = root.get("volumes") {
        for (name, body) in volumes {
            let location = format!("volume `{}`", name.as_str().unwrap_or("?"));
            if let Value::Mapping(volume) = body {
                for key in ["driver_opts", "external", "driver"] {
                    if volume
                        .get(key)
                        .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
                    {
                        return Err(violation(&location, key, "only plain per-env named volumes are allowed (no host paths, drivers or external volumes)"));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_service(location: &str, service: &Mapping) -> Result<(), PolicyViolation> {
    let get = |key: &str| service.get(key).filter(|v| !v.is_null());
    if get("privileged").is_some_and(|v| v != &Value::Bool(false)) {
        return Err(violation(
            location,
            "privileged",
            "privileged containers can take over the host",
        ));
    }
    for key in ["cap_add", "devices", "volumes_from", "device_cgroup_rules"] {
        if get(key).is_some_and(|v| !is_empty(v)) {
            return Err(violation(
                location,
                key,
                "gives the container access beyond its environment",
            ));
        }
    }
    if let Some(mode) = get("network_mode").and_then(Value::as_str) {
        if mode == "host" || mode.starts_with("container:") {
            return Err(violation(
                location,
                "network_mode",
                "shares a network namespace outside the environment",
            ));
        }
    }
    for key in ["pid", "ipc", "userns_mode", "uts", "cgroup"] {
        if let Some(mode) = get(key).and_then(Value::as_str) {
            if mode == "host" || mode.starts_with("container:") {
                return Err(violation(location, key, "shares a host namespace"));
            }
        }
    }
    if get("cgroup_parent").is_some() {
        return Err(violation(
            location,
            "cgroup_parent",
            "places the container outside Slipway's limits",
        ));
    }
    if let Some(Value::Sequence(opts)) = get("security_opt") {
        for opt in opts.iter().filter_map(Value::as_str) {
            let lower = opt.to_ascii_lowercase().replace(':', "=");
            if lower.contains("unconfined")
                || lower == "label=disable"
                || lower.starts_with("no-new-privileges=false")
            {
                return Err(violation(
                    location,
                    "security_opt",
                    &format!("`{opt}` removes the container's confinement"),
                ));
            }
        }
    }
    if let Some(Value::Sequence(volumes)) = get("volumes") {
        for volume in volumes {
            if let Some(why) = host_mount(volume) {
                return Err(violation(location, "volumes", &why));
            }
        }
    }
    if let Some(Value::Mapping(build)) = get("build") {
        if build.get("network").and_then(Value::as_str) == Some("host") {
            return Err(violation(
                location,
                "build.network",
                "builds may not use the host network",
            ));
        }
    }
    Ok(())
}

/// Why a volume entry mounts something from the host, if it does.
fn host_mount(volume: &Value) -> Option<String> {
    let (kind, source) = match volume {
        Value::String(text) => {
            let source = text.split(':').next().unwrap_or_default();
            // A single path is an anonymous volume, not a host mount.
            if !text.contains(':') {
                return None;
            }
            let is_path = source.starts_with('/')
                || source.starts_with('.')
                || source.starts_with('~')
                || source.contains('/');
            (if is_path { "bind" } else { "volume" }, source.to_string())
        }
        Value::Mapping(map) => {
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("volume");
            let source = map
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or_default();
            (kind, source.to_string())
        }
        _ => return None,
    };
    match kind {
        "bind" if source.contains("docker.sock") => Some(format!(
            "`{source}` would hand the Docker socket (control of the host) to the container"
        )),
        "bind" => Some(format!(
            "host path `{source}` may not be mounted; use a named volume"
        )),
        "npipe" => Some("named pipes from the host may not be mounted".into()),
        _ => None,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

fn violation(location: &str, key: &str, why: &str) -> PolicyViolation {
    PolicyViolation {
        location: location.to_string(),
        key: key.to_string(),
        why: why.to_string(),
    }
}
