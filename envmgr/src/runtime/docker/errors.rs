//! Turning bollard errors into `RuntimeError`s whose messages say what went wrong.

use std::error::Error as StdError;

use bollard::errors::Error;

use crate::runtime::RuntimeError;

/// The HTTP status of an error the engine answered with.
pub(super) fn status(err: &Error) -> Option<u16> {
    match err {
        Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub(super) fn is_not_found(err: &Error) -> bool {
    status(err) == Some(404)
}

pub(super) fn is_conflict(err: &Error) -> bool {
    status(err) == Some(409)
}

/// Errors that mean the engine could not be reached (or answered too slowly), as opposed
/// to the engine refusing a request.
pub(super) fn is_connection(err: &Error) -> bool {
    matches!(
        err,
        Error::HyperLegacyError { .. }
            | Error::HyperResponseError { .. }
            | Error::IOError { .. }
            | Error::SocketNotFoundError(_)
            | Error::RequestTimeoutError
            | Error::UnsupportedURISchemeError { .. }
    )
}

/// The most useful text of an error: the engine's own message when it sent one, otherwise
/// the error with its causes (hyper's top-level errors alone say little, e.g. "client error").
pub(super) fn describe(err: &Error) -> String {
    match err {
        Error::DockerResponseServerError { message, .. } => message.trim().to_string(),
        Error::DockerStreamError { error } => error.trim().to_string(),
        other => {
            let mut text = other.to_string();
            let mut source = other.source();
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(": ");
                    text.push_str(&cause_text);
                }
                source = cause.source();
            }
            text
        }
    }
}

/// `RuntimeError::Unavailable` for a failed `action` ("listing containers", ...).
pub(super) fn unavailable(action: &str, err: &Error) -> RuntimeError {
    RuntimeError::Unavailable(format!("{action} failed: {}", describe(err)))
}

/// Whether retrying the same request later may succeed: the engine could not be reached,
/// timed out, or failed internally (5xx). A 4xx is the engine refusing this request (bad
/// parameter, missing object, conflict): retrying it forever would only hide the message.
pub(super) fn is_transient(err: &Error) -> bool {
    if is_connection(err) {
        return true;
    }
    match status(err) {
        Some(code) => code >= 500,
        // Stream errors, JSON errors etc. are the engine answering, not being unreachable.
        None => false,
    }
}

/// The fallback mapping for a failed `action`: conflicts are reported as such, connection
/// errors, timeouts and 5xx as `Unavailable` (worth retrying), any other refusal (4xx) as
/// `Rejected` with the engine's message, so the env fails with it instead of retrying.
pub(super) fn other(action: &str, err: &Error) -> RuntimeError {
    if is_conflict(err) {
        return RuntimeError::Conflict(format!("{action} failed: {}", describe(err)));
    }
    tracing::warn!(action, error = %describe(err), "Docker request failed");
    if is_transient(err) {
        unavailable(action, err)
    } else {
        RuntimeError::Rejected(format!("{action} failed: {}", describe(err)))
    }
}

/// Keeps the end of `text` (where build errors and the last log lines are) within `max`
/// bytes, cutting at a character boundary.
pub(super) fn keep_end(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_end_keeps_the_tail_on_char_boundaries() {
        assert_eq!(keep_end("  short  ", 10), "short");
        assert_eq!(keep_end("abcdefghij", 4), "…ghij");
        let cut = keep_end("ééééé", 3);
        assert!(cut.ends_with('é') && cut.len() <= 3 + "…".len());
    }

    #[test]
    fn server_errors_are_classified_by_status() {
        let err = Error::DockerResponseServerError {
            status_code: 404,
            message: "No such container: x\n".into(),
        };
        assert!(is_not_found(&err));
        assert!(!is_connection(&err));
        assert_eq!(describe(&err), "No such container: x");
        assert!(matches!(
            other("removing", &err),
            RuntimeError::Rejected(m) if m.contains("No such container")
        ));
        let conflict = Error::DockerResponseServerError {
            status_code: 409,
            message: "in use".into(),
        };
        assert!(matches!(
            other("removing", &conflict),
            RuntimeError::Conflict(_)
        ));
        assert!(is_connection(&Error::RequestTimeoutError));
    }

    #[test]
    fn only_connection_errors_timeouts_and_5xx_are_transient() {
        for code in [400u16, 401, 403, 404, 406, 409, 410, 413, 422, 499] {
            let err = Error::DockerResponseServerError {
                status_code: code,
                message: "bad".into(),
            };
            assert!(!is_transient(&err), "{code} must not be transient");
            assert!(!other("creating volume", &err).is_transient(), "{code}");
        }
        for code in [500u16, 502, 503, 504] {
            let err = Error::DockerResponseServerError {
                status_code: code,
                message: "engine broke".into(),
            };
            assert!(other("creating volume", &err).is_transient(), "{code}");
        }
        assert!(other("listing", &Error::RequestTimeoutError).is_transient());
        let stream = Error::DockerStreamError {
            error: "invalid reference format".into(),
        };
        assert!(!other("pulling", &stream).is_transient());
    }
}
