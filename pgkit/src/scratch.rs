//! [`ScratchDir`]: a private temp dir for a test's files, removed even when the test process
//! dies hard (through a watchdog, `crate::watchdog`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::pg::{make_temp_dir, PgError};
use crate::watchdog::Watchdog;

/// A private temp dir (mode 0700, owned by the server's OS user when we are root, so servers and
/// poolers running as that user can write in it; root can always write too), removed on drop or
/// when the test process dies. Its parent is `/dev/shm` when that is a roomy tmpfs, else `/tmp`.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    watchdog: Watchdog,
}

impl ScratchDir {
    /// Creates the dir; `kind` becomes part of its name (`leadership-pg-<kind>...`).
    pub fn new(kind: &str) -> Result<ScratchDir, PgError> {
        let path = make_temp_dir(kind, false)?;
        let watchdog = Watchdog::spawn(Some(&path), "", &[])?;
        Ok(ScratchDir { path, watchdog })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        self.watchdog.fire();
        let _ = fs::remove_dir_all(&self.path);
    }
}
