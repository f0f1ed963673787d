//! The `slipway` binary: the server (`slipway serve`) and its command-line client.

mod access;
mod cli;
mod commands;
mod config;
mod demo;
mod discord;
mod executor;
mod github;
mod logging;
mod notify;
mod server;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "Slipway: branches become ephemeral environments, tested, merged and rolled out",
    arg_required_else_help = true,
    disable_help_subcommand = true,
    override_usage = "slipway serve [--config <CONFIG>] [--log-format <text|json>]\n       slipway <COMMAND> [ARGS]..."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Slipway server. Without --config it serves a bundled demo repo.
    Serve {
        /// The TOML config file (see slipway.example.toml).
        #[arg(long, env = "SLIPWAY_CONFIG")]
        config: Option<PathBuf>,
        /// How the server logs on stderr: `text` for people, `json` for one JSON object per
        /// line (log shippers).
        #[arg(long, env = "SLIPWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Build the bundled demo app image (`slipway/demo-app:latest`) and exit. `slipway
    /// serve` without --config does this itself; with a config the server never builds it,
    /// so run this first when your repos (or compose/demo.yml) use that image.
    DemoImage,
    /// Any other command (`env up ...`, `test ...`, `help`, `whoami`) is the grammar's: its
    /// words reach the CLI untouched.
    #[command(external_subcommand)]
    Client(Vec<String>),
}

fn main() -> ExitCode {
    // Every command but `serve` is the grammar's, and so is the help that lists them.
    let matches = Cli::command()
        .after_help(cli::help_text(None))
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // With JSON logs, the last word of a failed server is a JSON line too.
    let json_logs = matches!(
        cli.command,
        Command::Serve {
            log_format: LogFormat::Json,
            ..
        }
    );
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, log_format } => {
                logging::init(log_format);
                server::serve(config.as_deref(), log_format).await
            }
            Command::DemoImage => {
                logging::init(LogFormat::Text);
                server::build_demo_image().await
            }
            Command::Client(words) => cli::run(&words).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_logs {
                tracing::error!(error = %format!("{e:#}"), "slipway serve stopped on an error");
            } else {
                eprintln!("error: {e:#}");
            }
            if e.is::<cli::UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }

    #[test]
    fn log_format_is_text_unless_asked() {
        let Command::Serve { log_format, .. } = parse(&["slipway", "serve"]).unwrap().command
        else {
            panic!("not serve");
        };
        assert_eq!(log_format, LogFormat::Text);
        let Command::Serve { log_format, .. } =
            parse(&["slipway", "serve", "--log-format", "json"])
                .unwrap()
                .command
        else {
            panic!("not serve");
        };
        assert_eq!(log_format, LogFormat::Json);
    }

    #[test]
    fn an_unknown_log_format_is_a_clear_error() {
        let Err(e) = parse(&["slipway", "serve", "--log-format", "yaml"]) else {
            panic!("yaml accepted");
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let text = e.to_string();
        assert!(text.contains("'yaml'"), "{text}");
        assert!(text.contains("--log-format"), "{text}");
        assert!(text.contains("[possible values: text, json]"), "{text}");
    }
}
