//! Container output: one service's stream as is, or all services merged line by line with
//! a `service | ` prefix.

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};

use bollard::container::LogOutput;
use bollard::query_parameters::{LogsOptions, LogsOptionsBuilder};

use super::{errors, DockerRuntime};
use crate::names::{EnvName, ServiceName};
use crate::runtime::{labels, LogOptions, LogStream, RuntimeError};

impl DockerRuntime {
    pub(super) async fn log_stream(
        &self,
        env: &EnvName,
        service: Option<&ServiceName>,
        options: LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        let containers = self.service_containers(env).await?;
        let options = logs_options(&options);
        match service {
            Some(wanted) => {
                let (_, id) = containers
                    .into_iter()
                    .find(|(name, _)| name == wanted)
                    .ok_or_else(|| RuntimeError::NoSuchService(wanted.to_string()))?;
                Ok(self.container_logs(&id, options).boxed())
            }
            None => {
                let streams = containers.into_iter().map(|(name, id)| {
                    prefix_lines(&name, self.container_logs(&id, options.clone()))
                });
                Ok(stream::select_all(streams).boxed())
            }
        }
    }

    /// `(service, container id)` for every container of `env`, sorted by service.
    async fn service_containers(
        &self,
        env: &EnvName,
    ) -> Result<Vec<(ServiceName, String)>, RuntimeError> {
        let mut containers: Vec<(ServiceName, String)> = self
            .env_containers(env)
            .await?
            .into_iter()
            .filter(|c| !super::job::is_job(c.labels.as_ref()))
            .filter_map(|c| {
                let name = ServiceName::parse(c.labels.as_ref()?.get(labels::SERVICE)?).ok()?;
                Some((name, c.id?))
            })
            .collect();
        containers.sort();
        Ok(containers)
    }

    fn container_logs(
        &self,
        id: &str,
        options: LogsOptions,
    ) -> impl Stream<Item = Result<Bytes, RuntimeError>> + Send {
        let id_for_errors = id.to_string();
        self.docker.logs(id, Some(options)).map(move |item| {
            item.map(LogOutput::into_bytes).map_err(|e| {
                errors::other(
                    &format!("reading the logs of container {id_for_errors}"),
                    &e,
                )
            })
        })
    }

    /// The last `lines` lines of a container's output, for error messages; empty if they
    /// cannot be read.
    pub(super) async fn log_tail(&self, id: &str, lines: u64) -> String {
        let options = logs_options(&LogOptions {
            tail: Some(lines),
            follow: false,
        });
        let chunks: Vec<Result<Bytes, RuntimeError>> =
            self.container_logs(id, options).collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|b| b.to_vec())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn logs_options(options: &LogOptions) -> LogsOptions {
    let tail = options
        .tail
        .map(|n| n.to_string())
        .unwrap_or_else(|| "all".to_string());
    LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(options.follow)
        .tail(&tail)
        .build()
}

/// Re-chunks `inner` into whole lines, each starting with `service | `. Docker's chunks are
/// writes, not lines, so a partial line waits for its end (or for the stream's end).
fn prefix_lines(
    service: &ServiceName,
    inner: impl Stream<Item = Result<Bytes, RuntimeError>> + Send + 'static,
) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
    struct State {
        inner: BoxStream<'static, Result<Bytes, RuntimeError>>,
        prefix: Bytes,
        pending: BytesMut,
        done: bool,
    }
    let state = State {
        inner: inner.boxed(),
        prefix: Bytes::from(format!("{service} | ")),
        pending: BytesMut::new(),
        done: false,
    };
    stream::unfold(state, |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            match state.inner.next().await {
                Some(Ok(chunk)) => {
                    state.pending.extend_from_slice(&chunk);
                    if let Some(lines) = take_lines(&mut state.pending, &state.prefix, false) {
                        return Some((Ok(lines), state));
                    }
                }
                Some(Err(e)) => {
                    state.done = true;
                    return Some((Err(e), state));
                }
                None => {
                    state.done = true;
                    let rest = take_lines(&mut state.pending, &state.prefix, true)?;
                    return Some((Ok(rest), state));
                }
            }
        }
    })
    .boxed()
}

/// Removes the complete lines from `pending` (all of it when `flush`) and returns them
/// prefixed; `None` when there is nothing to return.
fn take_lines(pending: &mut BytesMut, prefix: &[u8], flush: bool) -> Option<Bytes> {
    let end = if flush {
        pending.len()
    } else {
        pending.iter().rposition(|b| *b == b'\n')? + 1
    };
    if end == 0 {
        return None;
    }
    let complete = pending.split_to(end);
    let mut out = BytesMut::with_capacity(complete.len() + prefix.len() * 4);
    for line in complete.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(prefix);
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.extend_from_slice(b"\n");
        }
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_prefixed_even_when_split_across_chunks() {
        let chunks = ["hel", "lo\nwor", "ld\n", "tail"].map(|c| Ok(Bytes::from(c)));
        let service = ServiceName::parse("web").unwrap();
        let out: Vec<Bytes> = prefix_lines(&service, stream::iter(chunks))
            .map(|c| c.unwrap())
            .collect()
            .await;
        let text: String = out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(text, "web | hello\nweb | world\nweb | tail\n");
    }
}
