//! What a service may ask of the host, held between a floor and `[limits]` ceilings, and the
//! names a compose file passes on to Docker. Docker reads `mem_limit: 0`, `pids_limit: 0` or
//! `-1` and `cpus: 0` as "no limit", and a tiny `cpus` rounds to 0 nano-CPUs, so every value
//! is classified first: "no limit" (zero, negative, NaN, infinite) gets the ceiling, a value
//! under the floor gets the floor ([`EnvLimits::FLOOR`]), a value over the ceiling gets the
//! ceiling; each change is reported in the env's warnings ("not applied"). Names are refused
//! here, when the file is read, so a bad one never reaches Docker as a confusing error.

use std::time::Duration;

use serde_yaml::Value;

use super::{compose_duration, parse_bytes, scalar_string, DEFAULT_STOP_GRACE};
use crate::settings::EnvLimits;

/// The resource limits a service asked for, already clamped (`None`: not set, the
/// configured default applies).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Resources {
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
}

/// The service-level keys (`mem_limit`, `cpus`, `pids_limit`) and `deploy.resources.limits`
/// (`memory`, `cpus`, `pids`); the service-level key wins when both are given.
pub(super) fn resources(
    service: &str,
    mem_limit: Option<&Value>,
    cpus: Option<&Value>,
    pids_limit: Option<&Value>,
    deploy: Option<&Value>,
    limits: &EnvLimits,
    warnings: &mut Vec<String>,
) -> Result<Resources, String> {
    let deployed = deploy_limits(service, deploy, warnings)?;
    let mut pick = |own: Option<&Value>, own_key: &'static str, theirs: Option<Value>, key| match (
        own.filter(|v| !v.is_null()),
        theirs,
    ) {
        (Some(own), Some(_)) => {
            warnings.push(format!(
                    "service `{service}`: `deploy.resources.limits.{key}` is not applied: `{own_key}` is set too and wins"
                ));
            Some((own.clone(), own_key.to_string()))
        }
        (Some(own), None) => Some((own.clone(), own_key.to_string())),
        (None, Some(theirs)) => Some((theirs, format!("deploy.resources.limits.{key}"))),
        (None, None) => None,
    };
    let memory = pick(mem_limit, "mem_limit", deployed.memory, "memory");
    let cpu = pick(cpus, "cpus", deployed.cpus, "cpus");
    let pid = pick(pids_limit, "pids_limit", deployed.pids, "pids");

    let floor = EnvLimits::FLOOR;
    let mut out = Resources::default();
    if let Some((value, key)) = memory {
        let text = scalar_string(&value);
        let asked = signed_bytes(&text).map_err(|e| format!("`{key}`: {e}"))?;
        out.memory_bytes = Some(clamp(
            Bound {
                service,
                key: &key,
                text: &text,
                asked: (asked > 0).then_some(asked),
                floor: floor.memory_bytes,
                ceiling: limits.max.memory_bytes,
                ceiling_key: "max_memory",
                show: show_bytes,
            },
            warnings,
        ));
    }
    if let Some((value, key)) = cpu {
        let text = scalar_string(&value);
        let asked = yaml_float(&text).ok_or_else(|| format!("`{key}` `{text}` is not a number"))?;
        // A tiny positive value is a (too small) limit, not "no limit": keep it positive.
        let nanos = (asked > 0.0).then(|| ((asked * 1e9) as i64).max(1));
        out.nano_cpus = Some(clamp(
            Bound {
                service,
                key: &key,
                text: &text,
                asked: nanos,
                floor: floor.nano_cpus,
                ceiling: limits.max.nano_cpus,
                ceiling_key: "max_cpus",
                show: show_cpus,
            },
            warnings,
        ));
    }
    if let Some((value, key)) = pid {
        let text = scalar_string(&value);
        let asked = match text.trim().parse::<i64>() {
            Ok(n) => n,
            // Beyond i64, or written as a float: still a number, saturated.
            Err(_) => match yaml_float(&text) {
                Some(f) if f.is_nan() => 0,
                Some(f) => f as i64,
                None => return Err(format!("`{key}` `{text}` is not a whole number")),
            },
        };
        out.pids = Some(clamp(
            Bound {
                service,
                key: &key,
                text: &text,
                asked: (asked > 0).then_some(asked),
                floor: floor.pids,
                ceiling: limits.max.pids,
                ceiling_key: "max_pids",
                show: |n| n.to_string(),
            },
            warnings,
        ));
    }
    Ok(out)
}

/// A number as Rust or YAML writes it (`.nan`, `.inf`, `-.inf` are YAML's).
fn yaml_float(text: &str) -> Option<f64> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        ".nan" => Some(f64::NAN),
        ".inf" | "+.inf" => Some(f64::INFINITY),
        "-.inf" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

#[derive(Default)]
struct DeployLimits {
    memory: Option<Value>,
    cpus: Option<Value>,
    pids: Option<Value>,
}

/// `deploy.resources.limits` is read; the rest of `deploy` (replicas, reservations,
/// placement...) is reported as not applied.
fn deploy_limits(
    service: &str,
    deploy: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<DeployLimits, String> {
    let mut out = DeployLimits::default();
    let mapping = |value: &Value, what: &str| -> Result<Option<serde_yaml::Mapping>, String> {
        match value {
            Value::Mapping(map) => Ok(Some(map.clone())),
            Value::Null => Ok(None),
            _ => Err(format!("`{what}` must be a mapping")),
        }
    };
    let Some(deploy) = deploy.map(|d| mapping(d, "deploy")).transpose()?.flatten() else {
        return Ok(out);
    };
    let mut not_applied = |key: String| {
        warnings.push(format!(
            "service `{service}`: `{key}` is not applied (Slipway reads only deploy.resources.limits)"
        ))
    };
    for (key, value) in &deploy {
        let key = scalar_string(key);
        if key != "resources" {
            not_applied(format!("deploy.{key}"));
            continue;
        }
        let Some(resources) = mapping(value, "deploy.resources")? else {
            continue;
        };
        for (key, value) in &resources {
            let key = scalar_string(key);
            if key != "limits" {
                not_applied(format!("deploy.resources.{key}"));
                continue;
            }
            let Some(limits) = mapping(value, "deploy.resources.limits")? else {
                continue;
            };
            for (key, value) in limits {
                match scalar_string(&key).as_str() {
                    "memory" => out.memory = Some(value),
                    "cpus" => out.cpus = Some(value),
                    "pids" => out.pids = Some(value),
                    other => not_applied(format!("deploy.resources.limits.{other}")),
                }
            }
        }
    }
    Ok(out)
}

struct Bound<'a> {
    service: &'a str,
    key: &'a str,
    text: &'a str,
    /// `None`: a value Docker reads as "no limit".
    asked: Option<i64>,
    floor: i64,
    ceiling: i64,
    ceiling_key: &'static str,
    show: fn(i64) -> String,
}

fn clamp(b: Bound, warnings: &mut Vec<String>) -> i64 {
    let Bound {
        service,
        key,
        text,
        asked,
        floor,
        ceiling,
        ceiling_key,
        show,
    } = b;
    let (applied, why) = match asked {
        None => (ceiling, "would mean no limit"),
        Some(n) if n > ceiling => (ceiling, "is above [limits] ceiling"),
        Some(n) if n < floor => (floor, "is below the floor"),
        Some(n) => return n,
    };
    let why = why.replace("ceiling", ceiling_key);
    warnings.push(format!(
        "service `{service}`: `{key}: {text}` {why}: not applied; the service gets {}",
        show(applied)
    ));
    applied
}

/// Sizes as [`parse_bytes`] reads them, with a sign (`-1` is Docker's "no limit").
fn signed_bytes(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    match trimmed.strip_prefix('-') {
        Some(rest) => parse_bytes(rest).map(|n| n.saturating_neg().min(-1)),
        None => parse_bytes(trimmed),
    }
}

pub fn show_bytes(n: i64) -> String {
    const MIB: i64 = 1024 * 1024;
    const GIB: i64 = 1024 * MIB;
    if n >= GIB && n % GIB == 0 {
        format!("{} GiB", n / GIB)
    } else if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

fn show_cpus(nanos: i64) -> String {
    format!("{} CPUs", nanos as f64 / 1e9)
}

/// `stop_signal`: a signal name (`SIGTERM`, `TERM`, `sigint`, `RTMIN+3`) or a number from 1
/// to 64, normalised to `SIGNAME` or the number. Anything else is refused.
pub(super) fn stop_signal(value: &Value) -> Result<String, String> {
    let text = scalar_string(value);
    let refuse = || {
        format!(
            "stop_signal `{}` is not a signal: use a name like SIGTERM or TERM, or a number from 1 to 64",
            text.escape_debug()
        )
    };
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return match trimmed.parse::<u8>() {
            Ok(n @ 1..=64) => Ok(n.to_string()),
            _ => Err(refuse()),
        };
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
        "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS", "RTMIN",
        "RTMAX",
    ];
    let realtime = |prefix: &str, max: u8| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    if NAMES.contains(&name) || realtime("RTMIN+", 15) || realtime("RTMAX-", 14) {
        Ok(format!("SIG{name}"))
    } else {
        Err(refuse())
    }
}

/// `stop_grace_period` (compose durations: `10s`, `1m30s`, `500ms`), capped by
/// `[limits] max_stop_grace`; without one, [`DEFAULT_STOP_GRACE`] (also capped).
pub(super) fn stop_grace(
    service: &str,
    value: Option<&Value>,
    limits: &EnvLimits,
    warnings: &mut Vec<String>,
) -> Result<Duration, String> {
    let max = limits.max_stop_grace;
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(DEFAULT_STOP_GRACE.min(max));
    };
    let text = scalar_string(value);
    let asked = match compose_duration(&text) {
        Ok(asked) => asked,
        // Too large to count is still a duration: it gets the ceiling like any other.
        Err(humantime::DurationError::NumberOverflow) => Duration::MAX,
        Err(e) => return Err(format!("stop_grace_period `{text}`: {e}")),
    };
    if asked > max {
        warnings.push(format!(
            "service `{service}`: `stop_grace_period: {text}` is above [limits] max_stop_grace: not applied; the service gets {}",
            humantime::format_duration(max)
        ));
        return Ok(max);
    }
    Ok(asked)
}

/// Named volumes become Docker volume names (`<env>-<name>`): Docker's own rule, bounded.
pub(super) fn volume_name(name: &str) -> Result<(), String> {
    let ok_start = name
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric);
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if name.len() > 64 || !ok_start || !ok_chars {
        return Err(format!(
            "volume name `{}` is not allowed: use letters, digits, `_`, `.` and `-`, starting with a letter or digit, at most 64 characters",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Where a volume is mounted in the container: an absolute path, not `/` itself.
pub(super) fn mount_target(target: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("volume target `{}` {why}", target.escape_debug()));
    if !target.starts_with('/') {
        return refuse("must be an absolute path in the container");
    }
    if target.trim_end_matches('/').is_empty() {
        return refuse("may not be the container's root `/`");
    }
    if target.len() > 4096 || target.chars().any(|c| c.is_control() || c == ':') {
        return refuse("has characters that are not allowed");
    }
    if target.split('/').any(|part| part == "..") {
        return refuse("may not contain `..`");
    }
    Ok(())
}

/// `working_dir`: Docker takes only absolute paths.
pub(super) fn working_dir(dir: &str) -> Result<(), String> {
    if !dir.starts_with('/') || dir.chars().any(char::is_control) || dir.len() > 4096 {
        return Err(format!(
            "working_dir `{}` must be an absolute path in the container",
            dir.escape_debug()
        ));
    }
    Ok(())
}

/// An image reference (`name[:tag][@digest]`, maybe with a registry): the characters
/// Docker's reference grammar allows, so a typo or an unexpanded `${VAR}` is named here.
pub(super) fn image_reference(image: &str) -> Result<(), String> {
    let ok_start = image
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric);
    let ok_chars = image
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
    if image.len() > 512 || !ok_start || !ok_chars || image.contains("..") {
        return Err(format!(
            "image `{}` is not a valid image reference (Slipway does not expand variables)",
            image.escape_debug()
        ));
    }
    Ok(())
}
