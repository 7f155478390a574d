//! `openshell-gateway`: parse the configuration, then run.

use clap::Parser;
use openshell_server::{Cli, Config, init_telemetry, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = async {
        let config = Config::from_cli(Cli::parse())?;
        init_telemetry(&config)?;
        run(config).await
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("openshell-gateway: {e}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
