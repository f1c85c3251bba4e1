//! The four signals the daemon answers, in one place: SIGTERM and SIGINT stop it, SIGHUP reloads
//! the rules, SIGUSR1 rescans every tree. They are watched on a task of their own, so that a stop
//! asked for while the daemon's loop is busy (a first walk of a big tree) is noted at once (see
//! [`crate::shutdown::Stop`]); reloads and rescans reach the loop through a channel.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

/// What a signal other than a stop asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    /// SIGHUP.
    Reload,
    /// SIGUSR1.
    Rescan,
}

/// The daemon's end of the signals.
pub(crate) struct Signals {
    /// Completes at the first SIGTERM or SIGINT.
    pub stop: oneshot::Receiver<()>,
    pub asked: mpsc::UnboundedReceiver<Asked>,
    /// Asked to stop at the first SIGTERM or SIGINT, at once (the loop may be busy).
    pub token: crate::shutdown::Stop,
}

/// Registers the four handlers (from here on, none of these signals ends the process by its
/// default action) and starts watching them. Must be called within the runtime.
pub(crate) fn listen() -> std::io::Result<Signals> {
    let named = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| std::io::Error::new(e.kind(), format!("cannot handle {name}: {e}")))
    };
    let mut term = named(SignalKind::terminate(), "SIGTERM")?;
    let mut int = named(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = named(SignalKind::hangup(), "SIGHUP")?;
    let mut usr1 = named(SignalKind::user_defined1(), "SIGUSR1")?;
    let (stop_tx, stop) = oneshot::channel();
    let (asked_tx, asked) = mpsc::unbounded_channel();
    let token = crate::shutdown::Stop::new();
    tokio::spawn(async move {
        let which = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => { let _ = asked_tx.send(Asked::Reload); }
                _ = usr1.recv() => { let _ = asked_tx.send(Asked::Rescan); }
            }
        };
        token.request();
        tracing::info!("{which} received");
        let _ = stop_tx.send(());
    });
    tracing::debug!("SIGTERM, SIGINT, SIGHUP and SIGUSR1 are handled from here on");
    Ok(Signals { stop, asked, token })
}
