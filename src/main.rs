use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = purgewatch::cli::Cli::parse();
    match purgewatch::commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            eprintln!("{:#}", anyhow::Error::from(err));
            code
        }
    }
}
