//! The `cordon` binary: parse the command line, set up logging to stderr,
//! run, and map the result to an exit code (0 clean, 1 detected, 2 error).

use clap::Parser;

fn main() {
    let cli = cordon::cli::Cli::parse();
    let log = cli.log.clone().unwrap_or_else(|| {
        match cli.command {
            cordon::cli::Command::Serve(_) => "info",
            _ => "warn",
        }
        .to_string()
    });
    let filter = tracing_subscriber::EnvFilter::try_new(&log).unwrap_or_else(|e| {
        eprintln!("cordon: bad --log filter {log:?}: {e}");
        std::process::exit(cordon::cli::EXIT_ERROR);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Large stacks (address space, touched only if used), declared so
    // that small messages are decoded on the worker that has them instead
    // of being handed to a decoder thread and back.
    let runtime = match cordon::mime::runtime_builder().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cordon: cannot start the async runtime: {e}");
            std::process::exit(cordon::cli::EXIT_ERROR);
        }
    };
    let code = match runtime.block_on(cordon::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cordon: {e:#}");
            cordon::cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
