//! `openshell-gateway`: parse the configuration, then run.

use std::time::Duration;

use openshell_server::{Config, Error, init_telemetry, run};

/// How long the exit waits for blocking threads (a TLS file read on a hung
/// mount, say) before the process ends anyway.
const BLOCKING_THREADS_AT_EXIT: Duration = Duration::from_secs(1);

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("starting the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let config = Config::from_args(std::env::args_os())?;
        init_telemetry(&config)?;
        run(config).await
    });
    // Dropping the runtime would wait for every blocking thread.
    runtime.shutdown_timeout(BLOCKING_THREADS_AT_EXIT);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Usage errors, `--help` and `--version` print as clap prints them.
        Err(Error::Args(e)) => e.exit(),
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> std::process::ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("openshell-gateway: {message}");
    }
    std::process::ExitCode::FAILURE
}
