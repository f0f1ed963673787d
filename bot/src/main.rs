//! The `slipway` binary: the server (`slipway serve`) and its command-line client.

mod access;
mod cli;
mod commands;
mod config;
mod demo;
mod discord;
mod github;
mod notify;
mod server;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "Slipway: branches become ephemeral environments, tested, merged and rolled out"
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
    /// Create, inspect and delete environments.
    Env {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::EnvCommand,
    },
    /// Run an environment's integration tests (its compose services in the `test` profile).
    Test {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(flatten)]
        test: cli::TestArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            Command::Env { client, command } => cli::run(client, command).await,
            Command::Test { client, test } => cli::test(client, test).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
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
