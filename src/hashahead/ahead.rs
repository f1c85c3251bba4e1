//! What a comparison may ask of what was found ahead of it: the [`Known`] state of a path.
//! Hashing ahead ([`super::Record`]) answers; `plan` and a catch-up, which know nothing ahead,
//! answer [`NothingAhead`].

use crate::hashing::FileMeta;

/// What is known of a path ahead of its comparison (hashed while the batch was debouncing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Nothing: look at the disk.
    Unknown,
    /// The path is not a regular file any more.
    Gone,
    /// The file's metadata and hash.
    File(FileMeta),
}

/// Where a comparison learns what is [`Known`] ahead.
pub trait Ahead {
    fn known(&self, rel: &str) -> Known;

    /// Whether a directory at `rel` must be walked for files no event named. False only for a
    /// directory whose events all changed its attributes (rsync setting every directory's mtime
    /// after a deploy): the files in it had events of their own.
    fn needs_walk(&self, _rel: &str) -> bool {
        true
    }
}

/// Nothing known ahead: every candidate is looked at on disk (`plan`, catch-up).
pub struct NothingAhead;

impl Ahead for NothingAhead {
    fn known(&self, _rel: &str) -> Known {
        Known::Unknown
    }
}
