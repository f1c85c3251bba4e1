//! What each subcommand does. [`run`] dispatches and maps errors to exit statuses:
//! 0 success, 1 a runtime failure, 2 a usage or rules-file error.

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::{self, ConfigError, LoadOptions, Loaded};
use crate::daemon::{self, DaemonError};
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("{0}")]
    Failed(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// SIGTERM, SIGINT, SIGHUP or SIGUSR1 could not be taken over.
    #[error("cannot handle the signals")]
    Signals(#[source] std::io::Error),
    /// Standard output could not be written. A reader that went away (`plan | head -1`) ends
    /// the command quietly with status 0, as ripgrep does; any other write error is status 1.
    #[error("cannot write to standard output")]
    Output(#[source] std::io::Error),
}

impl CommandError {
    /// What `main` prints: the error and its causes, scrubbed of every configured secret.
    pub fn describe(self) -> String {
        let text = format!("{:#}", anyhow::Error::from(self));
        crate::secret::scrub(&text).into_owned()
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            CommandError::Config(_) | CommandError::Usage(_) => ExitCode::from(2),
            _ if self.is_quiet() => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        }
    }

    /// True when there is nothing to say: the reader of standard output closed the pipe.
    pub fn is_quiet(&self) -> bool {
        matches!(self, CommandError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Writes one line to standard output, or says why it could not (see [`CommandError::Output`]).
pub(crate) fn write_line(line: std::fmt::Arguments<'_>) -> Result<(), CommandError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let text = line.to_string();
    let text = crate::logging::printable(&text);
    out.write_all(crate::secret::scrub(&text).as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(CommandError::Output)
}

/// `println!` for commands: a closed pipe or a full disk is an error the command returns, never
/// a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::write_line(format_args!($($arg)*))?
    };
}

/// `eprintln!` that never panics: where standard error is gone there is no one left to tell.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let text = $crate::logging::printable(&text);
        let _ = writeln!(std::io::stderr(), "{}", $crate::secret::scrub(&text));
    }};
}

mod check;
mod plan;
mod purge;
mod status;
mod verify;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CommandError> {
    crate::logging::init(cli.log_format);
    match &cli.command {
        Command::Run(args) => run_daemon(&cli, args.dry_run),
        Command::Check(args) => check::run(&cli, args),
        Command::Purge(args) => purge::run(&cli, args),
        Command::Status(args) => status::run(&cli, args),
        Command::Plan => plan::run(&cli),
        Command::Verify(args) => verify::run(&cli, args),
    }
}

/// Loads the rules; warnings are logged.
fn load(cli: &Cli, dry_run: bool) -> Result<Loaded, CommandError> {
    load_with(
        cli,
        LoadOptions {
            dry_run,
            ..Default::default()
        },
    )
}

/// Loads the rules as `opts` says; warnings are logged.
fn load_with(cli: &Cli, opts: LoadOptions) -> Result<Loaded, CommandError> {
    let loaded = config::load(&cli.config, opts)?;
    // Every secret of the file is scrubbed from every output from here on.
    crate::secret::remember(loaded.config.secrets().iter());
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded)
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Sends, comparisons and the monitoring endpoint do not preempt the daemon's loop.
        .on_thread_start(crate::threads::background)
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)
}

fn run_daemon(cli: &Cli, dry_run: bool) -> Result<ExitCode, CommandError> {
    let loaded = load(cli, dry_run)?;
    crate::memory::limit_arenas();
    let rt = runtime()?;
    rt.block_on(async {
        let signals = crate::signals::listen().map_err(CommandError::Signals)?;
        daemon::run(loaded.config, daemon::Options { dry_run }, signals).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `12s`, `5m`, `3h`: a short age for people.
pub(crate) fn age(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}
