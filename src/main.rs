use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// jemalloc: see `purgewatch::memory` for why.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = purgewatch::cli::Cli::parse();
    match purgewatch::commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            if !err.is_quiet() {
                // Where stderr is gone too there is no one left to tell.
                let _ = writeln!(std::io::stderr(), "{}", err.describe());
            }
            code
        }
    }
}
