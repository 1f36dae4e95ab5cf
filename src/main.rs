//! The `mcpctl` binary: parse flags, set up tracing and diagnostics, run,
//! report the error once, and exit with the code of design §3.

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

/// `0.1.0 (commit 1a2b3c4d5e6f)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MCPCTL_GIT_COMMIT"),
    ")"
);

fn main() -> ExitCode {
    // kube's rustls client takes the process-wide crypto provider and
    // panics without one; ring is the only provider built in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Set here, not in the derive: only the binary is rebuilt when the
    // commit changes.
    let matches = mcpctl::cli::Cli::command().version(VERSION).get_matches();
    let cli = match mcpctl::cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let color = mcpctl::cli::use_color(&std::io::stderr());
    // Wrapped lines help on a terminal; in logs and CI they split paths in two.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // `watch` is a service: it logs what it does by default. One-shot
    // commands speak through their output and log only warnings.
    let default = if cli.command.is_service() {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MCPCTL_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(color)
        // A log line that cannot be written has nowhere to be reported:
        // tracing's own report of it would panic on the same closed stderr.
        .log_internal_errors(false)
        .init();
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .unicode(color)
                .terminal_links(false)
                .wrap_lines(tty)
                .build(),
        )
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            mcpctl::cli::write_stderr(&format!("error: cannot start the async runtime: {e}\n"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(mcpctl::cli::run(cli));
    // A command that returned has nothing left to wait for: a blocking call
    // still running (a state write behind a hung disk, a fetch) must not
    // hold the exit, which a second SIGTERM was promised.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(outcome) => outcome.into(),
        // `mcpctl plan | head -1`: the reader has what it wanted, and as
        // with ripgrep, a closed pipe ends the output quietly.
        Err(report)
            if report
                .downcast_ref::<mcpctl::cli::OutputError>()
                .is_some_and(|e| e.is_closed_pipe()) =>
        {
            ExitCode::SUCCESS
        }
        Err(report) => {
            mcpctl::cli::write_stderr(&format!("{report:?}\n"));
            ExitCode::FAILURE
        }
    }
}
