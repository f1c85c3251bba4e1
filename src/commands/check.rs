//! `purgewatch check [--remote]`.

use std::process::ExitCode;

use super::{CommandError, load, runtime};
use crate::cli::{CheckArgs, Cli};
use crate::providers::{Provider, http_client};

pub fn run(cli: &Cli, args: &CheckArgs) -> Result<ExitCode, CommandError> {
    let config = load(cli, false)?.config;
    outln!(
        "{}: ok ({} target{}, {} rule{})",
        cli.config.display(),
        config.targets.len(),
        if config.targets.len() == 1 { "" } else { "s" },
        config.rules.len(),
        if config.rules.len() == 1 { "" } else { "s" }
    );
    if !args.remote {
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime()?;
    let http = http_client();
    let mut failed = 0;
    for t in &config.targets {
        let provider = Provider::new(t, http.clone());
        match rt.block_on(provider.check()) {
            Ok(msg) => outln!("target \"{}\" ({}): ok: {msg}", t.name, t.kind.type_name()),
            Err(e) => {
                failed += 1;
                errln!("target \"{}\" ({}): {e}", t.name, t.kind.type_name());
            }
        }
    }
    if failed > 0 {
        return Err(CommandError::Failed(format!(
            "{failed} of {} targets failed the remote check",
            config.targets.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}
