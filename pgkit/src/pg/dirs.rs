//! Temp dirs (on a roomy tmpfs, or on disk for a durable server), the template cluster,
//! free ports, and the server log.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{atomic::AtomicU64, atomic::Ordering, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{env, io_err, Env, PgError, CONFIG, HOST, PG_USER};
use crate::command::output_text;
use crate::watchdog::Watchdog;

/// A fresh dir, mode 700, owned by the server's user when we are root. With `on_disk` its parent
/// is a disk-backed dir (`/var/tmp`, `/tmp`) when there is one, else tmpfs like the others.
pub(crate) fn make_temp_dir(kind: &str, on_disk: bool) -> Result<PathBuf, PgError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let env = env()?;
    let disk = ["/var/tmp", "/tmp"]
        .into_iter()
        .find(|d| on_disk && writable(d) && !is_tmpfs(Path::new(d)));
    let base = match (disk, roomy_tmpfs("/dev/shm"), env.run_as) {
        (Some(d), _, _) => PathBuf::from(d),
        (None, true, _) => PathBuf::from("/dev/shm"),
        (None, false, Some(_)) => PathBuf::from("/tmp"),
        (None, false, None) => std::env::temp_dir(),
    };
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "leadership-pg-{kind}{}-{n}-{nanos:x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("creating {}: {e}", dir.display()))),
            Ok(()) => {}
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = env.run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        return Ok(dir);
    }
}

pub(super) fn statfs(dir: &Path) -> Option<libc::statfs> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st)
}

pub(super) fn writable(dir: &str) -> bool {
    let c = CString::new(dir).unwrap();
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Whether `path` lies on a tmpfs (RAM: an fsync there costs nothing).
pub fn is_tmpfs(path: &Path) -> bool {
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
    statfs(path).is_some_and(|st| st.f_type as i64 == libc::TMPFS_MAGIC as i64)
}

/// Whether `dir` is a writable tmpfs with at least 1 GiB free (Docker's default /dev/shm is 64 MiB).
#[allow(clippy::unnecessary_cast)] // statfs's field types differ between architectures
pub(super) fn roomy_tmpfs(dir: &str) -> bool {
    let Some(st) = statfs(Path::new(dir)) else {
        return false;
    };
    writable(dir)
        && is_tmpfs(Path::new(dir))
        && (st.f_bavail as u64).saturating_mul(st.f_bsize as u64) >= 1 << 30
}

/// The watchdog of a server in `dir/data` (or, without `stop_server`, of a plain dir): stops the
/// server, then removes `dir`. On failure `dir` is removed here.
pub(super) fn spawn_watchdog(
    env: &Env,
    dir: &Path,
    stop_server: bool,
) -> Result<Watchdog, PgError> {
    if stop_server {
        let stop = r#""$@" -D "$dir/data" stop -m immediate -w -t 30"#;
        Ok(Watchdog::spawn(
            Some(dir),
            stop,
            &env.server_argv("pg_ctl"),
        )?)
    } else {
        Ok(Watchdog::spawn(Some(dir), "", &[])?)
    }
}

pub(super) fn initdb(env: &Env, data: &Path) -> Result<(), PgError> {
    let args = format!("--no-sync -U {PG_USER} --auth=trust -E UTF8 --locale=C -D");
    let out = env
        .server_cmd("initdb")
        .args(args.split(' '))
        .arg(data)
        .output()?;
    if !out.status.success() {
        return Err(PgError::Initdb {
            log: output_text(&out),
        });
    }
    OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?
        .write_all(CONFIG.as_bytes())?;
    Ok(())
}

/// The per-process template data dir: initdb'd once, removed by its watchdog at process exit.
pub(super) fn template(env: &Env) -> Result<&'static Path, PgError> {
    static TEMPLATE: OnceLock<Result<(PathBuf, Watchdog), String>> = OnceLock::new();
    let t = TEMPLATE.get_or_init(|| {
        let dir = make_temp_dir("template-", false).map_err(|e| e.to_string())?;
        let watchdog = spawn_watchdog(env, &dir, false).map_err(|e| e.to_string())?;
        initdb(env, &dir.join("data")).map_err(|e| e.to_string())?;
        Ok((dir.join("data"), watchdog))
    });
    t.as_ref()
        .map(|(data, _)| data.as_path())
        .map_err(|e| PgError::Initdb {
            log: format!("(template) {e}"),
        })
}

/// A port on 127.0.0.1 that was free a moment ago (another process may take it before we bind:
/// callers retry on "address in use").
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((HOST, 0))?.local_addr()?.port())
}

pub(crate) fn wait_for_port(port: u16, timeout: Duration) -> bool {
    wait_for_addr(SocketAddr::from(([127, 0, 0, 1], port)), timeout)
}

/// Whether `addr` accepts a TCP connection within `timeout` (polling).
pub(crate) fn wait_for_addr(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The last `n` lines of `path` after byte offset `from`.
pub(crate) fn log_tail(path: &Path, from: u64, n: usize) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f
            .seek(SeekFrom::Start(from))
            .and_then(|_| f.read_to_end(&mut bytes));
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
