//! A throwaway PostgreSQL server for tests, on loopback.
//!
//! [`shared`] starts one server per test process the first time it is asked for: `initdb`
//! into a fresh directory, then `postgres` on a free port of 127.0.0.1 (trust
//! authentication, no fsync: the data is thrown away), from the Debian `postgresql` package
//! (`/usr/lib/postgresql/<version>/bin`, or `$PG_BIN`). PostgreSQL refuses to run as root,
//! so when the tests run as root (as CI does) the server runs as the unprivileged
//! `postgres` user that the package creates. The server dies with the test process
//! (a shell watching a pipe this process holds stops it and removes its
//! directory), and the data directories of processes that are gone are removed
//! by the next start. Each test takes a database of its own with
//! [`Postgres::create_database`].

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Why no server could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or $PG_BIN); \
         scripts/prereqs.sh installs the Debian postgresql package"
    )]
    NotInstalled,
    /// Running as root, but there is no `postgres` user to run the server as.
    #[error("running as root and there is no postgres user to run PostgreSQL as")]
    NoPostgresUser,
    /// A step failed.
    #[error("{step}: {detail}")]
    Failed {
        /// What was being done.
        step: &'static str,
        /// What went wrong (the tool's output where there is one).
        detail: String,
    },
}

/// A running server.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    bin: PathBuf,
    next_database: AtomicU32,
    /// Kept open for the life of the process: its closing stops the server.
    _lifeline: std::sync::Mutex<ChildStdin>,
}

/// How long the server has to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The process's server, started on first use; the same error for every caller when it
/// cannot start.
pub fn shared() -> Result<&'static Postgres, Error> {
    static SERVER: OnceLock<Result<Postgres, Error>> = OnceLock::new();
    SERVER
        .get_or_init(Postgres::start)
        .as_ref()
        .map_err(Clone::clone)
}

impl Postgres {
    fn start() -> Result<Postgres, Error> {
        let bin = server_binaries().ok_or(Error::NotInstalled)?;
        let owner = server_user()?;
        let base = std::env::temp_dir().join("dialcore-pg");
        remove_stale(&base);
        let root = base.join(format!("pid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        std::fs::create_dir_all(&data)
            .map_err(|error| failed("create the data directory", error))?;
        for dir in [&base, &root, &data] {
            // The base is shared like /tmp (sticky), so that the server's user may remove
            // its own directory when it stops.
            let mode = if dir == &data {
                0o700
            } else if dir == &base {
                0o1777
            } else {
                0o755
            };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(|error| failed("set the data directory's mode", error))?;
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))
                .map_err(|error| failed("hand the data directory to postgres", error))?;
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .map_err(|error| failed("hand the data directory to postgres", error))?;
        }

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir("/");
        as_user(&mut initdb, owner);
        run("initdb", &mut initdb)?;

        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match launch(&bin, &root, &data, port, owner) {
                Ok(lifeline) => {
                    return Ok(Postgres {
                        port,
                        bin,
                        next_database: AtomicU32::new(0),
                        _lifeline: std::sync::Mutex::new(lifeline),
                    })
                }
                // Another process may have taken the port between our probe and the bind.
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("three tries"))
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new empty database; returns its URL.
    pub fn create_database(&self) -> Result<String, Error> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next_database.fetch_add(1, Ordering::Relaxed)
        );
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name);
        run("createdb", &mut createdb)?;
        Ok(self.url(&name))
    }
}

/// Starts `postgres` on `port` under a shell that holds the read end of a pipe whose write
/// end this process keeps: when the process ends, however it ends, the shell reads end of
/// file, stops the server and removes its directory. Waits until the server accepts
/// connections.
fn launch(
    bin: &Path,
    root: &Path,
    data: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> Result<ChildStdin, Error> {
    let log_path = root.join(format!("postgres-{port}.log"));
    let log = std::fs::File::create(&log_path).map_err(|error| failed("create the log", error))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&log_path, Some(uid), Some(gid))
            .map_err(|error| failed("hand the log to postgres", error))?;
    }
    let mut guard = Command::new("sh");
    guard
        .arg("-c")
        .arg(
            r#"root="$1"; shift
"$@" </dev/null & server=$!
read _ignored
kill -INT "$server"; wait "$server"; rm -rf "$root""#,
        )
        .arg("postgres-guard")
        .arg(root)
        .arg(bin.join("postgres"))
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(root)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(
            log.try_clone()
                .map_err(|error| failed("open the log", error))?,
        )
        .stderr(log);
    as_user(&mut guard, owner);
    let mut child = guard
        .spawn()
        .map_err(|error| failed("start postgres", error))?;
    let lifeline = child.stdin.take().expect("piped stdin");

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut ready = Command::new(bin.join("pg_isready"));
        ready
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(port.to_string());
        if ready.status().is_ok_and(|status| status.success()) {
            return Ok(lifeline);
        }
        let exited = child.try_wait().ok().flatten().is_some();
        if exited || Instant::now() > deadline {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            drop(lifeline);
            let _ = child.wait();
            return Err(Error::Failed {
                step: "wait for postgres to accept connections",
                detail: log,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The newest installed server's binaries.
fn server_binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid to run the server as: the `postgres` user when running as root, else
/// none (the current user).
fn server_user() -> Result<Option<(u32, u32)>, Error> {
    // `/proc/self` belongs to the process's effective user.
    let euid = std::fs::metadata("/proc/self")
        .map_err(|error| failed("read the effective user", error))?
        .uid();
    if euid != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|error| failed("read /etc/passwd", error))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == "postgres").then_some(())?;
            let _password = fields.next()?;
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .map(Some)
        .ok_or(Error::NoPostgresUser)
}

fn as_user(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
    }
}

fn run(step: &'static str, command: &mut Command) -> Result<(), Error> {
    let output = command.output().map_err(|error| failed(step, error))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Failed {
        step,
        detail: format!(
            "{}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|error| failed("find a free port", error))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|error| failed("find a free port", error))
}

/// Removes the data directories of test processes that no longer run.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.strip_prefix("pid-")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn failed(step: &'static str, error: impl std::fmt::Display) -> Error {
    Error::Failed {
        step,
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server starts once per process and hands out distinct, reachable databases.
    #[test]
    fn starts_once_and_creates_databases() {
        let server = match shared() {
            Ok(server) => server,
            Err(Error::NotInstalled) => {
                eprintln!("skipped: {}", Error::NotInstalled);
                return;
            }
            Err(error) => panic!("PostgreSQL did not start: {error}"),
        };
        let again = shared().expect("the same server");
        assert_eq!(server.port(), again.port());
        let first = server.create_database().expect("a database");
        let second = server.create_database().expect("another database");
        assert_ne!(first, second);
        assert!(first.starts_with(&format!("postgres://postgres@127.0.0.1:{}/", server.port())));
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, server.port())).expect("listening");
    }
}
