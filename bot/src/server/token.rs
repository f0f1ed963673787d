//! The API token (`api_token`, or `SLIPWAY_API_TOKEN`): required, and long enough, whenever
//! `listen` is reachable from other machines.

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;

/// The shortest API token accepted when `listen` is reachable from other machines.
pub const MIN_API_TOKEN_CHARS: usize = 16;

/// Why the API token in the config (or `SLIPWAY_API_TOKEN`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error(
        "listen = \"{listen}\" is reachable from other machines, so an API token is required: \
         set api_token in the config or SLIPWAY_API_TOKEN (at least {MIN_API_TOKEN_CHARS} \
         characters, e.g. from `openssl rand -hex 32`)"
    )]
    Missing { listen: SocketAddr },
    #[error(
        "{key} is empty: an empty token does not turn authentication off. Set a token of at \
         least {MIN_API_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`), or remove the \
         key and listen on loopback only (listen = \"127.0.0.1:8080\")"
    )]
    Empty { key: &'static str },
    #[error(
        "{key} is shorter than {MIN_API_TOKEN_CHARS} characters while listen = \"{listen}\" \
         is reachable from other machines: set a longer token (e.g. `openssl rand -hex 32`) \
         or listen on loopback only"
    )]
    TooShort {
        key: &'static str,
        listen: SocketAddr,
    },
}

/// The API token from the config or `SLIPWAY_API_TOKEN`; required off loopback.
pub fn api_token(config: &Config) -> anyhow::Result<Option<SecretString>> {
    let from_env = std::env::var("SLIPWAY_API_TOKEN").ok();
    Ok(api_token_from(config, from_env.as_deref())?)
}

/// [`api_token`] with the environment variable passed in, so tests need not touch the
/// process environment. An empty token once meant "authentication off" and so gave anyone
/// who could reach `listen` the admin role: it is now always an error, and a short one is
/// an error wherever other machines can try to guess it.
pub fn api_token_from(
    config: &Config,
    from_env: Option<&str>,
) -> Result<Option<SecretString>, ApiTokenError> {
    let (token, source) = match from_env {
        Some(token) => (Some(token.to_string()), "SLIPWAY_API_TOKEN"),
        None => (
            config
                .api_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            "api_token",
        ),
    };
    let loopback = config.listen.ip().is_loopback();
    match token {
        None if loopback => Ok(None),
        None => Err(ApiTokenError::Missing {
            listen: config.listen,
        }),
        Some(token) if token.trim().is_empty() => Err(ApiTokenError::Empty { key: source }),
        Some(token) if !loopback && token.trim().chars().count() < MIN_API_TOKEN_CHARS => {
            Err(ApiTokenError::TooShort {
                key: source,
                listen: config.listen,
            })
        }
        Some(token) => {
            if token.trim().chars().count() < MIN_API_TOKEN_CHARS {
                tracing::warn!(
                    key = source,
                    "the API token is shorter than {MIN_API_TOKEN_CHARS} characters; \
                     fine on loopback, but use a longer one before listening beyond it"
                );
            }
            Ok(Some(SecretString::from(token)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_required_off_loopback() {
        std::env::remove_var("SLIPWAY_API_TOKEN");
        let config: Config = toml::from_str("listen = \"0.0.0.0:8080\"").unwrap();
        assert!(api_token(&config).is_err());
        let config: Config =
            toml::from_str("listen = \"0.0.0.0:8080\"\napi_token = \"0123456789abcdef\"").unwrap();
        assert!(api_token_from(&config, None).unwrap().is_some());
    }

    fn token_config(listen: &str, token: Option<&str>) -> Config {
        let mut text = format!("listen = \"{listen}\"\n");
        if let Some(token) = token {
            text.push_str(&format!("api_token = {token:?}\n"));
        }
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn an_empty_or_blank_token_is_refused_everywhere() {
        for listen in [
            "127.0.0.1:8080",
            "[::1]:0",
            "0.0.0.0:8080",
            "[::]:80",
            "10.1.2.3:9",
        ] {
            for blank in ["", " ", "\t", "  \n "] {
                let err = api_token_from(&token_config(listen, Some(blank)), None).unwrap_err();
                assert!(
                    matches!(err, ApiTokenError::Empty { .. }),
                    "{listen} {blank:?}"
                );
                assert!(err.to_string().contains("api_token is empty"), "{err}");
                // The same through the environment, which wins over the file.
                let good = "0123456789abcdef0123";
                let err =
                    api_token_from(&token_config(listen, Some(good)), Some(blank)).unwrap_err();
                assert!(
                    err.to_string().contains("SLIPWAY_API_TOKEN is empty"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn a_short_token_is_refused_beyond_loopback_only() {
        for listen in ["0.0.0.0:8080", "[::]:80", "192.168.1.5:1"] {
            for short in ["t", "x", "123456789012345", "  padded-short  "] {
                let err = api_token_from(&token_config(listen, Some(short)), None).unwrap_err();
                assert!(
                    matches!(err, ApiTokenError::TooShort { .. }),
                    "{listen} {short:?}"
                );
                assert!(
                    err.to_string().contains("api_token is shorter than 16"),
                    "{err}"
                );
                let err = api_token_from(&token_config(listen, None), Some(short)).unwrap_err();
                assert!(err.to_string().contains("SLIPWAY_API_TOKEN"), "{err}");
            }
            let ok = token_config(listen, Some("0123456789abcdef"));
            assert!(api_token_from(&ok, None).unwrap().is_some());
        }
        for listen in ["127.0.0.1:8080", "[::1]:0", "127.0.0.2:3"] {
            assert!(api_token_from(&token_config(listen, Some("t")), None)
                .unwrap()
                .is_some());
            assert!(api_token_from(&token_config(listen, None), None)
                .unwrap()
                .is_none());
        }
    }
}
