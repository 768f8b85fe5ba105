//! The `mcptap` binary: the command line. The agent is the library
//! (`lib.rs`), read top-down from there.

use clap::Parser;
use mcptap::{cli, install, run, scan, tail, top};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("mcptap: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        cli::Command::Run(args) => {
            init_logging(&args.log_level);
            runtime.block_on(run::run(*args))
        }
        cli::Command::Check(args) => {
            init_logging("warn");
            runtime.block_on(run::check(args.hooks))
        }
        cli::Command::Floor(args) => {
            init_logging("info");
            runtime.block_on(run::floor(args.hooks))
        }
        cli::Command::Top(args) => runtime.block_on(top::run(args)),
        cli::Command::Tail(args) => {
            init_logging("warn");
            runtime.block_on(tail::run(args))
        }
        cli::Command::Scan(args) => {
            init_logging("warn");
            return match scan::run(args) {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("mcptap: {err:#}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        cli::Command::Replay(args) => {
            init_logging("warn");
            run::replay(args)
        }
        cli::Command::Install(what) => install::run(what),
        cli::Command::UiUrl(args) => run::ui_url(&args.state_dir),
        cli::Command::TlsInfo(args) => {
            init_logging("warn");
            return mcptap::capture::tls::print_info(&args.files);
        }
    };
    // What is still running once the command is done (a dashboard or API
    // request in flight, a tail client's stream) is cut short: the agent
    // has flushed its events by then, and a stop must not wait on a reader.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mcptap: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("mcptap={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
