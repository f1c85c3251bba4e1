//! `purgewatch check [--remote]`.

use std::process::ExitCode;

use super::{CommandError, load_with, runtime};
use crate::cli::{CheckArgs, Cli};
use crate::config::{ConfigError, LoadOptions};
use crate::providers::{Provider, http_client};

pub(super) fn run(cli: &Cli, args: &CheckArgs) -> Result<ExitCode, CommandError> {
    // With --remote, a target whose secret is missing does not keep the others from being
    // asked: its problem is printed, the others are checked, and the status is still 2.
    let loaded = load_with(
        cli,
        LoadOptions {
            collect_secret_problems: args.remote,
            ..Default::default()
        },
    )?;
    let config = loaded.config;
    let unusable: Vec<&str> = loaded.secret_problems.iter().map(|(t, _)| t.as_str()).collect();
    if loaded.secret_problems.is_empty() {
        outln!(
            "{}: ok ({} target{}, {} rule{})",
            cli.config.display(),
            config.targets.len(),
            if config.targets.len() == 1 { "" } else { "s" },
            config.rules.len(),
            if config.rules.len() == 1 { "" } else { "s" }
        );
    }
    if let Some(w) = crate::limits::check_rules(&config.rules) {
        tracing::warn!("{w}");
    }
    if !args.remote {
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime()?;
    let http = http_client();
    let mut failed = 0;
    for t in config.targets.iter().filter(|t| !unusable.contains(&t.name.as_str())) {
        let provider = Provider::new(t, http.clone());
        match rt.block_on(provider.check()) {
            Ok(msg) => outln!("target \"{}\" ({}): ok: {msg}", t.name, t.kind.type_name()),
            Err(e) => {
                failed += 1;
                errln!("target \"{}\" ({}): {e}", t.name, t.kind.type_name());
            }
        }
    }
    if !loaded.secret_problems.is_empty() {
        return Err(ConfigError::Invalid(loaded.secret_problems.into_iter().map(|(_, d)| d).collect()).into());
    }
    if failed > 0 {
        return Err(CommandError::Failed(format!(
            "{failed} of {} targets failed the remote check",
            config.targets.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}
