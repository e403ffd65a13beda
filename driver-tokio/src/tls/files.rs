//! Reading the files the settings name, for either connector: errors that name the setting and
//! the file, and libpq's rule on key file permissions.

use std::path::Path;

use super::TlsError;

pub(super) fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File {
        setting,
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn content(setting: &'static str, path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::Content {
        setting,
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// libpq's rule: a key file readable by group or others is refused, except group-readable
/// when owned by root (for system-wide keys shared through a group).
#[cfg(unix)]
pub(super) fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| TlsError::File {
        setting: "sslkey",
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(content("sslkey", path, "not a regular file"));
    }
    let forbidden = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if meta.mode() & forbidden != 0 {
        return Err(TlsError::KeyPermissions(path.to_path_buf()));
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn check_key_permissions(_path: &Path) -> Result<(), TlsError> {
    Ok(())
}
