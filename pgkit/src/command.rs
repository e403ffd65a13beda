//! How the kit runs its children: without the developer's `PG*` settings, from `/`, and what
//! they printed, for error messages.

use std::process::{Command, Output, Stdio};

/// Children must not pick up the developer's PG* settings (PGDATA, PGOPTIONS, PGSSLMODE...);
/// cwd `/` because `postgres` may not be allowed into the caller's cwd (e.g. under /root).
pub(crate) fn sanitized(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir("/").stdin(Stdio::null());
    cmd
}

/// stdout + stderr of a finished command, for error messages.
pub(crate) fn output_text(out: &Output) -> String {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.trim_end().to_string()
}
