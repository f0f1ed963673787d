//! Making images available: pulling references that are missing and building from a
//! context tar with the classic builder (BuildKit needs a gRPC session the engine may not
//! offer, and the classic builder's plain text output is what we show users anyway).

use std::collections::{HashMap, VecDeque};

use bollard::body_full;
use bollard::models::{BuildInfo, CreateImageInfo, ImageInspect};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, CreateImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::{errors, DockerRuntime};
use crate::names::ServiceName;
use crate::runtime::{BuildRequest, BuiltImage, Progress, ProgressSink, RuntimeError};

/// Name prefix of the images built from compose files (see `compose::plan`).
const BUILT_IMAGE_PREFIX: &str = "slipway/";

/// Longest build error message kept (its end, where the failing step is).
const MAX_BUILD_ERROR: usize = 2000;
/// Build output lines kept to explain a failure.
const BUILD_TAIL_LINES: usize = 30;

impl DockerRuntime {
    /// The images Slipway builds (`slipway/<repo>-<service>:<content>`) present on the
    /// engine, each with whether a container of anyone (running or stopped) uses it:
    /// content tags make built images shareable between instances on one engine.
    pub(super) async fn list_built_images(&self) -> Result<Vec<BuiltImage>, RuntimeError> {
        use std::collections::HashSet;

        use bollard::query_parameters::{ListContainersOptionsBuilder, ListImagesOptionsBuilder};

        let filters = HashMap::from([(
            "reference".to_string(),
            vec![format!("{BUILT_IMAGE_PREFIX}*")],
        )]);
        let images = self
            .docker
            .list_images(Some(
                ListImagesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| errors::other("listing built images", &e))?;
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(true).build()))
            .await
            .map_err(|e| errors::other("listing containers", &e))?;
        let in_use: HashSet<String> = containers.into_iter().filter_map(|c| c.image_id).collect();
        Ok(images
            .into_iter()
            .flat_map(|image| {
                let used = in_use.contains(&image.id);
                image
                    .repo_tags
                    .into_iter()
                    .map(move |reference| BuiltImage {
                        reference,
                        in_use: used,
                    })
            })
            .filter(|image| image.reference.starts_with(BUILT_IMAGE_PREFIX))
            .collect())
    }

    /// Removes a built image's tag without force: Docker refuses (409) while a container
    /// uses it, and that refusal is an answer (`false`), as is an image already gone.
    pub(super) async fn remove_unused_image(&self, reference: &str) -> Result<bool, RuntimeError> {
        use bollard::query_parameters::RemoveImageOptionsBuilder;

        let options = RemoveImageOptionsBuilder::new().force(false).build();
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if errors::is_not_found(&e) || errors::is_conflict(&e) => Ok(false),
            Err(e) => Err(errors::other(&format!("removing image `{reference}`"), &e)),
        }
    }

    /// The image if present locally; `None` if not.
    async fn local_image(&self, reference: &str) -> Result<Option<ImageInspect>, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(Some(image)),
            Err(e) if errors::is_not_found(&e) => Ok(None),
            Err(e) => Err(errors::other(
                &format!("inspecting image `{reference}`"),
                &e,
            )),
        }
    }

    pub(super) async fn pull_if_missing(
        &self,
        reference: &str,
        progress: &ProgressSink,
    ) -> Result<String, RuntimeError> {
        if self.local_image(reference).await?.is_some() {
            tracing::debug!(image = reference, "image present locally");
            return Ok(reference.to_string());
        }
        let service = placeholder_service(reference);
        tracing::info!(image = reference, "pulling image");
        let mut options = CreateImageOptionsBuilder::new().from_image(reference);
        // Without a tag Docker would pull every tag of the repository.
        if !has_tag_or_digest(reference) {
            options = options.tag("latest");
        }
        let mut stream = self.docker.create_image(Some(options.build()), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = pull_line(&info) {
                        progress(Progress::Output {
                            service: service.clone(),
                            line,
                        });
                    }
                }
                Err(e) if errors::is_connection(&e) => {
                    return Err(errors::unavailable(
                        &format!("pulling image `{reference}`"),
                        &e,
                    ))
                }
                Err(e) => {
                    return Err(RuntimeError::Image {
                        service,
                        image: reference.to_string(),
                        message: format!(
                            "it is not present locally and pulling it failed: {}",
                            errors::describe(&e)
                        ),
                    })
                }
            }
        }
        Ok(reference.to_string())
    }

    pub(super) async fn build_if_changed(
        &self,
        request: &BuildRequest,
        progress: &ProgressSink,
    ) -> Result<String, RuntimeError> {
        if let Some(existing) = self.local_image(&request.tag).await? {
            if labels_match(&existing, &request.required_labels) {
                tracing::debug!(tag = %request.tag, "image already built");
                let line = format!("using existing image {}", request.tag);
                progress(Progress::Output {
                    service: request.service.clone(),
                    line,
                });
                return Ok(request.tag.clone());
            }
        }
        tracing::info!(service = %request.service, tag = %request.tag, "building image");
        self.build(request, progress).await?;
        Ok(request.tag.clone())
    }

    async fn build(
        &self,
        request: &BuildRequest,
        progress: &ProgressSink,
    ) -> Result<(), RuntimeError> {
        let service = &request.service;
        let context = request
            .context
            .read()
            .await
            .map_err(|message| RuntimeError::Build {
                service: service.clone(),
                message: format!("reading the build context: {message}"),
            })?;
        let build_args: HashMap<&str, &str> = request
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // No `labels`: the classic builder adds a step per label; the tag says what it is.
        let mut options = BuildImageOptionsBuilder::new()
            .dockerfile(&request.dockerfile)
            .t(&request.tag)
            .buildargs(&build_args)
            .rm(true)
            .forcerm(true)
            .version(BuilderVersion::BuilderV1);
        if let Some(target) = &request.target {
            options = options.target(target);
        }

        let body = body_full(context);
        let mut stream = self.docker.build_image(options.build(), None, Some(body));
        // The failing step's output comes as ordinary lines before the error itself.
        let mut tail = VecDeque::with_capacity(BUILD_TAIL_LINES);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    for line in build_lines(&info) {
                        if tail.len() == BUILD_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.clone());
                        progress(Progress::Output {
                            service: service.clone(),
                            line,
                        });
                    }
                }
                Err(e) if errors::is_connection(&e) => {
                    return Err(errors::unavailable(
                        &format!("building the image of `{service}`"),
                        &e,
                    ))
                }
                Err(e) => return Err(build_error(service, &tail, &errors::describe(&e))),
            }
        }
        Ok(())
    }
}

/// The build failure with the output that led to it, trimmed to its end.
fn build_error(service: &ServiceName, tail: &VecDeque<String>, error: &str) -> RuntimeError {
    let mut text: Vec<&str> = tail.iter().map(String::as_str).collect();
    if !text.last().is_some_and(|last| last.contains(error)) {
        text.push(error);
    }
    let message = errors::keep_end(&text.join("\n"), MAX_BUILD_ERROR);
    tracing::info!(%service, error, "image build failed");
    RuntimeError::Build {
        service: service.clone(),
        message,
    }
}

/// The non-empty lines of one build output message.
fn build_lines(info: &BuildInfo) -> Vec<String> {
    let text = info
        .stream
        .as_deref()
        .or(info.status.as_deref())
        .unwrap_or_default();
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// One line of pull progress, skipping the byte counters that repeat many times a second.
fn pull_line(info: &CreateImageInfo) -> Option<String> {
    let status = info.status.as_deref()?;
    if matches!(status, "Downloading" | "Extracting" | "Waiting") {
        return None;
    }
    Some(match &info.id {
        Some(id) => format!("{id}: {status}"),
        None => status.to_string(),
    })
}

/// Whether the image carries every label the request asks for (a changed label, such as a
/// context hash, means the tag is stale).
fn labels_match(image: &ImageInspect, wanted: &std::collections::BTreeMap<String, String>) -> bool {
    let empty = HashMap::new();
    let have = image
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .unwrap_or(&empty);
    wanted.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// `postgres:16`, `ghcr.io/a/b@sha256:…` have one; `postgres`, `localhost:5000/app` don't.
fn has_tag_or_digest(reference: &str) -> bool {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    reference.contains('@') || last.contains(':')
}

/// `ImageSource::Pull` carries no service name; progress and errors name the image's
/// repository instead (`docker.io/library/postgres:16` → `postgres`).
fn placeholder_service(reference: &str) -> ServiceName {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repository = last.split(':').next().unwrap_or(last);
    let cleaned: String = repository
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    ServiceName::parse(&cleaned)
        .unwrap_or_else(|_| ServiceName::parse("image").expect("`image` is a valid name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_with_tags_and_digests_are_recognised() {
        assert!(has_tag_or_digest("postgres:16"));
        assert!(has_tag_or_digest("localhost:5000/app:1"));
        assert!(has_tag_or_digest("ghcr.io/a/b@sha256:abcd"));
        assert!(!has_tag_or_digest("postgres"));
        assert!(!has_tag_or_digest("localhost:5000/app"));
    }

    #[test]
    fn pull_placeholders_are_valid_service_names() {
        assert_eq!(
            placeholder_service("docker.io/library/postgres:16").as_str(),
            "postgres"
        );
        assert_eq!(placeholder_service("ghcr.io/a/b@sha256:abcd").as_str(), "b");
        assert_eq!(placeholder_service("_weird").as_str(), "image");
    }

    #[test]
    fn build_errors_keep_the_failing_output() {
        let service = ServiceName::parse("web").unwrap();
        let tail: VecDeque<String> = ["Step 2/2 : RUN false", " ---> Running in abc"]
            .map(String::from)
            .into();
        let err = build_error(
            &service,
            &tail,
            "The command '/bin/sh -c false' returned a non-zero code: 1",
        );
        let RuntimeError::Build { message, .. } = err else {
            panic!("expected a build error")
        };
        assert!(message.contains("RUN false"), "{message}");
        assert!(
            message.ends_with("returned a non-zero code: 1"),
            "{message}"
        );
    }
}
