//! Debian's nginx in the server namespace, with a config, pid file, logs
//! and temp paths of its own in a temporary directory; stopped on drop.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use cors_filter_tests::{
    TempDir,
    harness::netns::{NetnsPair, SERVER_V4},
    harness::process::{Guarded, die_with_parent},
    harness::raw_client::enter_netns,
};

const NGINX: &str = "/usr/sbin/nginx";
pub const PORT: u16 = 8080;
const READY_LIMIT: Duration = Duration::from_secs(10);

/// Answers a preflight from an origin other than `https://app.example.com`
/// with 403, as a server that checks CORS itself would; an allowed one
/// with 204.
pub const REJECT_PREFLIGHTS: &str = r#"
    map "$request_method $http_origin" $cors_reject {
        default 0;
        "~^OPTIONS " 1;
        # An exact string wins over a regular expression in a map.
        "OPTIONS https://app.example.com" 0;
    }
    server {
        listen LISTEN backlog=4096;
        location / {
            if ($cors_reject) {
                return 403;
            }
            return 204;
        }
    }
"#;

/// A small answer on every path, kept alive.
pub const ANSWER_OK: &str = r#"
    server {
        listen LISTEN backlog=4096;
        location / {
            return 200 "ok\n";
        }
    }
"#;

/// A running nginx: master and one worker.
pub struct Nginx {
    /// Declared first: stopped before its directory goes.
    master: Guarded,
    workers: Vec<u32>,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx in the server namespace of `pair` with `servers` (the
    /// `server` blocks, `LISTEN` standing for the server's address and
    /// [`PORT`]) and waits until it accepts connections from the client
    /// namespace.
    pub fn start(pair: &NetnsPair, servers: &str) -> Result<Nginx> {
        let dir = TempDir::new("nginx")?;
        let d = dir.path().display().to_string();
        let servers = servers.replace("LISTEN", &format!("{SERVER_V4}:{PORT}"));
        // One worker: its CPU time is read from its threads, and one process
        // on a 2-CPU machine leaves the other CPU to the client.
        // The worker on the last CPU, the clients on the first (see
        // `CLIENT_CPU`): each run places them alike, which steadies the figures.
        let affinity = match online_cpus() {
            n if n >= 2 => format!("worker_cpu_affinity 1{};\n", "0".repeat(n - 1)),
            _ => String::new(),
        };
        let config = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\n{affinity}pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n    access_log off;\n    keepalive_requests 10000000;\n\
             client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n{servers}}}\n"
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", pair.server_ns_path()))
            .arg(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command, libc::SIGTERM);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {NGINX} in namespace {}", pair.server))?;
        let mut nginx = Nginx {
            master: Guarded {
                child,
                name: "nginx".into(),
            },
            workers: Vec::new(),
            dir,
        };
        nginx.wait_ready(pair)?;
        Ok(nginx)
    }

    fn wait_ready(&mut self, pair: &NetnsPair) -> Result<()> {
        let Nginx {
            master,
            workers,
            dir,
        } = self;
        let master_pid = master.child.id();
        master.wait_ready(
            READY_LIMIT,
            Duration::from_millis(50),
            || {
                *workers = children(master_pid);
                Ok(!workers.is_empty() && accepts(pair)?)
            },
            || error_log(dir),
        )
    }

    /// The master and worker processes, whose CPU time is the server's.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.master.child.id()];
        pids.extend(&self.workers);
        pids
    }

    pub fn error_log(&self) -> String {
        error_log(&self.dir)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too; a worker that
        // outlived a killed master is killed here, if it is still nginx's.
        self.master.stop(Duration::from_secs(10));
        for &pid in &self.workers {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("nginx") {
                // SAFETY: kill on a pid just checked to be an nginx process.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

/// The CPU the clients (wrk, the raw sender) are pinned to.
pub const CLIENT_CPU: usize = 0;

pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// Whether a TCP connection from the client namespace to nginx succeeds.
fn accepts(pair: &NetnsPair) -> Result<bool> {
    let ns_path = pair.client_ns_path();
    let addr = SocketAddr::new(SERVER_V4.parse()?, PORT);
    std::thread::spawn(move || -> Result<bool> {
        enter_netns(&ns_path)?;
        Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))?
}

/// nginx's error log in `dir`, empty if it cannot be read.
fn error_log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
}
