//! Slipway as a library: the server (`slipway serve`), the command-line client and every
//! surface between them. The `slipway` binary (`main.rs`) only parses its arguments and
//! calls [`run`]; the benchmarks use the command grammar ([`commands`]) from here.
//!
//! `slipway serve` builds one application context ([`app::App`]) from the config and hands
//! it to each surface: the HTTP API, GitHub, Discord, the notifier and the executor.

mod access;
mod app;
mod cli;
pub mod commands;
pub mod config;
mod demo;
mod discord;
mod executor;
mod github;
mod logging;
mod notify;
pub mod proxy;
mod queue;
mod rollout;
mod runtime;
mod server;
/// Slipway in-process on the runtime's test twin, for the surface tests.
#[doc(hidden)]
pub mod testing;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

pub use logging::LogFormat;

/// What the `slipway` binary was asked to do.
#[derive(Debug)]
pub enum Run {
    /// `slipway serve`: the server, with a config file or in demo mode.
    Serve {
        config: Option<PathBuf>,
        log_format: LogFormat,
    },
    /// `slipway demo-image`: build the bundled demo image and exit.
    DemoImage,
    /// Any other command: the grammar's words, for the command-line client.
    Client(Vec<String>),
}

/// The command-line client's help: every command of the grammar and the CLI's own flags.
pub fn help_text() -> String {
    cli::help_text(None)
}

/// Runs `command` to its end and says how the process should exit: 0 on success, 2 for a
/// command line that is wrong before anything ran, 1 for anything else.
pub fn run(command: Run) -> ExitCode {
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
        command,
        Run::Serve {
            log_format: LogFormat::Json,
            ..
        }
    );
    let result = runtime.block_on(async {
        match command {
            Run::Serve { config, log_format } => {
                logging::init(log_format);
                server::serve(config.as_deref(), log_format).await
            }
            Run::DemoImage => {
                logging::init(LogFormat::Text);
                server::build_demo_image().await
            }
            Run::Client(words) => cli::run(&words).await,
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
