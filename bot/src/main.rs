//! The `slipway` binary: parses its arguments and hands them to the library (`slipway::run`),
//! which runs the server (`slipway serve`) or the command-line client.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use slipway::{LogFormat, Run};

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
        .after_help(slipway::help_text())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    slipway::run(match cli.command {
        Command::Serve { config, log_format } => Run::Serve { config, log_format },
        Command::DemoImage => Run::DemoImage,
        Command::Client(words) => Run::Client(words),
    })
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
