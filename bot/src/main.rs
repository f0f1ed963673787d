//! The `slipway` binary: the server (`slipway serve`) and its command-line client.

mod access;
mod cli;
mod commands;
mod config;
mod demo;
mod discord;
mod executor;
mod github;
mod notify;
mod server;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "Slipway: branches become ephemeral environments, tested, merged and rolled out",
    arg_required_else_help = true,
    disable_help_subcommand = true,
    override_usage = "slipway serve [--config <CONFIG>]\n       slipway <COMMAND> [ARGS]..."
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => {
                init_logging();
                server::serve(config.as_deref()).await
            }
            Command::DemoImage => {
                init_logging();
                server::build_demo_image().await
            }
            Command::Client(words) => cli::run(&words).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<cli::UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Structured logs on stderr; `RUST_LOG` adjusts levels.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,bollard=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
