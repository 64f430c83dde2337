//! `shop`: the sourceflow example application's console.
//!
//! `cargo run -p shop -- demo` for a guided tour; `cargo run -p shop -- --help` for the
//! subcommands; no subcommand for the interactive menu.

mod admin;
mod cli;
mod db;
mod demo;
mod menu;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // Usage errors are clap's: a message, the usage line, exit code 2.
    let cli = cli::Cli::parse();
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
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable line, never a backtrace: the error chain says what and why.
            let mut message = cli::one_line(&e);
            if message.contains("database is locked") {
                message.push_str(
                    " (another process is writing to it: try again, or wait longer with --lock-timeout)",
                );
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
