//! What passes between the stages: a file waiting to be purged for a target (from the comparison
//! to the state directory and the planner), and one request to a provider (from the planner to
//! delivery and the providers). Kept apart so that `state` and `providers` need not know the
//! planner.

/// What happened to a file, as a comparison found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Created,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// A file waiting to be purged for a target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PendingFile {
    pub rule: String,
    pub path: String,
    pub kind: ChangeKind,
}

/// One request to a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// SiteHost: purge the whole stack.
    Stack,
    /// VIMS: purge the URLs that match this pattern (`*` for everything).
    Pattern(String),
    /// Webhook, command: these URLs (absolute where the rule has a `base_url`) or everything,
    /// and the changed files they stand for.
    Urls {
        urls: Vec<String>,
        everything: bool,
        files: Vec<PendingFile>,
    },
}
