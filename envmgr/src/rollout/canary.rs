//! What a rollout's canary env runs. Beside the release env (every service at the channel's
//! version) the canary env runs, at the new version, only the services whose spec differs
//! from the release env's (images are content-tagged, so an unchanged build has an equal
//! spec) plus the entry service the front door splits traffic on; every other service is
//! the release env's own container, reached by name (the shared-services mechanism with the
//! release env as the source). A database that did not change therefore stays the one the
//! stable version uses.

use std::collections::BTreeSet;

use crate::compose::plan::EnvPlan;
use crate::compose::ComposeFile;
use crate::names::{EnvName, ServiceName};
use crate::runtime::{EnvSpec, Protocol, SharedServices};

/// The service the front door reaches for an env of `file`: `x-slipway.main`, else `web`
/// with a published TCP port, else the first service with one (as the env reconciler marks
/// the main service).
pub fn entry_service(file: &ComposeFile) -> Option<ServiceName> {
    if let Some(main) = &file.main {
        return Some(main.clone());
    }
    let published = || {
        file.services
            .iter()
            .filter(|s| s.ports.iter().any(|p| p.protocol == Protocol::Tcp))
    };
    published()
        .find(|s| s.name.as_str() == "web")
        .or_else(|| published().next())
        .map(|s| s.name.clone())
}

/// The services the canary runs itself: those of `canary` (the new version, every service
/// planned) whose spec is not the release env's, plus `entry`.
pub fn changed_services(
    canary: &EnvSpec,
    release: &EnvSpec,
    entry: Option<&ServiceName>,
) -> BTreeSet<ServiceName> {
    canary
        .services
        .iter()
        .filter(|spec| {
            Some(&spec.name) == entry
                || !release
                    .services
                    .iter()
                    .any(|r| r.name == spec.name && r == *spec)
        })
        .map(|spec| spec.name.clone())
        .collect()
}

/// Restricts `canary` (planned with every service at the new version) to the services that
/// changed against `release` plus `entry`; the others come from `release_env`. Dependencies
/// on those are dropped (the release env is Ready before the canary applies, which is what
/// they wait for), and only the volumes the canary's own services mount are kept.
pub fn canary_plan(
    mut canary: EnvPlan,
    release: &EnvSpec,
    release_env: &EnvName,
    entry: Option<&ServiceName>,
) -> EnvPlan {
    let own = changed_services(&canary.spec, release, entry);
    let reached: Vec<ServiceName> = canary
        .spec
        .services
        .iter()
        .map(|s| s.name.clone())
        .filter(|name| !own.contains(name))
        .collect();
    canary.images.retain(|(service, _)| own.contains(service));
    canary.spec.services.retain(|s| own.contains(&s.name));
    for service in &mut canary.spec.services {
        service.depends_on.retain(|d| own.contains(&d.service));
    }
    let mounted: BTreeSet<&String> = canary
        .spec
        .services
        .iter()
        .flat_map(|s| s.volumes.iter().map(|v| &v.volume))
        .collect();
    let volumes = canary
        .spec
        .volumes
        .iter()
        .filter(|v| mounted.contains(v))
        .cloned()
        .collect();
    canary.spec.volumes = volumes;
    canary.spec.shared = (!reached.is_empty()).then(|| SharedServices {
        env: release_env.clone(),
        services: reached,
    });
    canary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RepoName;
    use crate::runtime::{
        Dependency, DependencyCondition, ImageSource, PortSpec, ServiceSpec, VolumeMount,
    };

    fn service(name: &str, image: &str) -> ServiceSpec {
        let file =
            ComposeFile::parse(format!("services:\n  {name}:\n    image: {image}\n").as_bytes())
                .unwrap();
        let s = &file.services[0];
        ServiceSpec {
            name: s.name.clone(),
            image: image.into(),
            command: None,
            entrypoint: None,
            environment: Default::default(),
            ports: vec![],
            expose: vec![],
            depends_on: vec![],
            healthcheck: None,
            restart: s.restart.clone(),
            volumes: vec![],
            working_dir: None,
            user: None,
            limits: Default::default(),
            stop_signal: None,
            stop_grace: s.stop_grace,
        }
    }

    fn spec(env: &str, services: Vec<ServiceSpec>) -> EnvSpec {
        EnvSpec {
            env: EnvName::parse(env).unwrap(),
            repo: RepoName::parse("shop").unwrap(),
            services,
            volumes: vec!["pgdata".into(), "cache".into()],
            shared: None,
        }
    }

    #[test]
    fn the_canary_runs_changed_services_and_the_entry_and_reaches_the_rest() {
        let mut db = service("db", "postgres:16");
        db.volumes.push(VolumeMount {
            volume: "pgdata".into(),
            target: "/data".into(),
            read_only: false,
        });
        let mut web_old = service("web", "web:1");
        web_old.ports.push(PortSpec {
            container_port: 8080,
            protocol: Protocol::Tcp,
        });
        web_old.depends_on.push(Dependency {
            service: db.name.clone(),
            condition: DependencyCondition::Healthy,
        });
        let worker_old = service("worker", "worker:1");
        let mut worker_new = service("worker", "worker:2");
        worker_new.volumes.push(VolumeMount {
            volume: "cache".into(),
            target: "/cache".into(),
            read_only: false,
        });
        let release = spec(
            "shop-production",
            vec![db.clone(), web_old.clone(), worker_old],
        );
        let canary_spec = spec(
            "shop-production-canary",
            vec![db.clone(), web_old.clone(), worker_new],
        );
        let images = canary_spec
            .services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    ImageSource::Pull {
                        reference: s.image.clone(),
                    },
                )
            })
            .collect();
        let plan = EnvPlan {
            images,
            spec: canary_spec,
        };
        let release_env = EnvName::parse("shop-production").unwrap();
        let entry = web_old.name.clone();
        let out = canary_plan(plan, &release, &release_env, Some(&entry));
        let names: Vec<&str> = out.spec.services.iter().map(|s| s.name.as_str()).collect();
        // `web` is the entry (unchanged but split on), `worker` changed, `db` did not.
        assert_eq!(names, ["web", "worker"]);
        let images: Vec<&str> = out.images.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(images, ["web", "worker"]);
        let shared = out.spec.shared.expect("db comes from the release env");
        assert_eq!(shared.env, release_env);
        assert_eq!(shared.services, vec![db.name.clone()]);
        assert!(out.spec.services[0].depends_on.is_empty());
        assert_eq!(out.spec.volumes, vec!["cache".to_string()]);
    }

    #[test]
    fn the_entry_is_main_else_web_else_the_first_published() {
        let parse = |text: &str| ComposeFile::parse(text.as_bytes()).unwrap();
        let file = parse(
            "services:\n  api:\n    image: a\n    ports: ['80']\n  web:\n    image: w\n    ports: ['80']\n",
        );
        assert_eq!(entry_service(&file).unwrap().as_str(), "web");
        let file =
            parse("services:\n  db:\n    image: d\n  api:\n    image: a\n    ports: ['80']\n");
        assert_eq!(entry_service(&file).unwrap().as_str(), "api");
        let file = parse(
            "x-slipway: { main: db }\nservices:\n  db:\n    image: d\n  api:\n    image: a\n    ports: ['80']\n",
        );
        assert_eq!(entry_service(&file).unwrap().as_str(), "db");
        let file = parse("services:\n  db:\n    image: d\n");
        assert_eq!(entry_service(&file), None);
    }
}
