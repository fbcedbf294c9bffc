//! The bed "behind a TLS proxy" (issue 14): three network namespaces,
//!
//! ```text
//!  browser (curl, Chromium)        proxy (HAProxy or nginx)         backend (app + cors-filter)
//!  198.18.0.1  veth-b <-------> veth-pf 198.18.0.2
//!                                        198.18.0.5 veth-pb <-------> veth-s 198.18.0.6
//!         HTTPS to api.proxy.test:443                 HTTP/1.1 to :8080 (HAProxy: PROXY v2 first)
//! ```
//!
//! with a test CA and the proxy's certificate made by `openssl` for each
//! bed, the project's test server as the application in the backend
//! namespace (it allows every origin, as a careless application does, and
//! logs every request it reads), and HAProxy or nginx, each with its own
//! config, pid and logs in the bed's temporary directory, terminating TLS
//! in the proxy namespace. cors-filter runs on the backend's interface
//! (named `veth-s`, as in the two-namespace bed, so that
//! [`RunningFilter`]'s `run --iface veth-s` fits).
//!
//! Nothing routes between the browser and the backend: the proxy reaches
//! each on its own link, and every connection has both ends in the bed's
//! namespaces. Everything is removed on drop, a failing test included:
//! processes stopped, namespaces deleted, the temporary directory removed;
//! the namespaces of a killed run are deleted by the next one.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    TempDir, cors_filter_bin,
    frames::bare_xdp::{BareAction, BareXdp},
    harness::attempt::Attempt,
    harness::client::CurlRun,
    harness::filter::{FilterHome, RunningFilter},
    harness::netns::{CLIENT_V4, SERVER_IF, delete_stale_namespaces, offloads_off},
    harness::process::{Guarded, die_with_parent, run_bounded, run_ok},
    harness::raw_client::enter_netns,
    harness::server::{ServerOptions, TestServer},
    require_root, unique_suffix,
};

/// The browser's address: the two-namespace bed's client address, so that
/// the browser tests' page origins (`http://198.18.0.1:8001`, `:8002`) are
/// the same here.
pub const BROWSER_V4: &str = CLIENT_V4;
/// The proxy's address on the browser's link, which the proxy's host name
/// resolves to, and on the backend's link.
pub const PROXY_FRONT_V4: &str = "198.18.0.2";
pub const PROXY_BACK_V4: &str = "198.18.0.5";
/// The backend's address.
pub const BACKEND_V4: &str = "198.18.0.6";
/// The interface names, each in its namespace.
pub const BROWSER_IF: &str = "veth-b";
pub const PROXY_FRONT_IF: &str = "veth-pf";
pub const PROXY_BACK_IF: &str = "veth-pb";
pub const BACKEND_IF: &str = SERVER_IF;
/// The proxy's host name: in its certificate, resolved by curl's
/// `--resolve` and Chromium's `--host-resolver-rules`.
pub const PROXY_HOST: &str = "api.proxy.test";
pub const PROXY_PORT: u16 = 443;
/// A path the proxy answers itself (200, `Access-Control-Allow-Origin:
/// *`), never asking the application: how a page makes sure its browser
/// can speak TLS to the proxy before it measures anything.
pub const PROXY_READY_PATH: &str = "/proxy-ready";
/// The application's port, which cors-filter inspects.
pub const BACKEND_PORT: u16 = 8080;
/// How long the proxy waits for the application's answer (HAProxy's
/// `timeout server`, nginx's `proxy_read_timeout`): a dropped request is
/// answered by the proxy after this long.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the proxy waits for a connection to the application.
pub const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long curl waits, all in: past the proxy's timeouts, so that what the
/// proxy answers is seen.
pub const CURL_MAX_TIME: Duration = Duration::from_secs(10);
/// How long one curl run may take in all (several transfers included).
pub const CURL_RUN_LIMIT: Duration = Duration::from_secs(60);
/// How long the application waits for a next request on a kept-alive
/// connection: longer than a test, so that it never closes one of the
/// proxy's pooled connections under a request.
pub const BACKEND_IDLE: Duration = Duration::from_secs(60);

pub const HAPROXY: &str = "/usr/sbin/haproxy";
pub const NGINX: &str = "/usr/sbin/nginx";
pub const OPENSSL: &str = "/usr/bin/openssl";

/// How long a proxy may take to listen.
const START_LIMIT: Duration = Duration::from_secs(20);

/// Namespace name prefixes: `cfxb-<pid>-<n>` (browser), `cfxp-` (proxy),
/// `cfxk-` (backend).
const PREFIXES: [&str; 3] = ["cfxb-", "cfxp-", "cfxk-"];

fn ip(args: &[&str]) -> Result<()> {
    run_ok(Command::new("ip").args(args)).map(|_| ())
}

/// Fails naming the Debian package if `path` is missing.
pub fn require(path: &str, package: &str) -> Result<()> {
    if !Path::new(path).is_file() {
        bail!(
            "{path} not found: this test needs Debian's {package} (`apt-get install {package}`, or `cargo xtask setup`)"
        );
    }
    Ok(())
}

/// Deletes the namespaces of test processes that died without cleaning up.
/// Once per process.
fn sweep_stale_namespaces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| delete_stale_namespaces(&PREFIXES));
}

/// The three namespaces and the two veth pairs; deleted on drop.
pub struct Namespaces {
    pub browser: String,
    pub proxy: String,
    pub backend: String,
}

impl Namespaces {
    pub fn create() -> Result<Namespaces> {
        sweep_stale_namespaces();
        let suffix = unique_suffix();
        let [browser, proxy, backend] = PREFIXES.map(|p| format!("{p}{suffix}"));
        let ns = Namespaces {
            browser,
            proxy,
            backend,
        };
        // From here on, Drop deletes whatever was made.
        for name in [&ns.browser, &ns.proxy, &ns.backend] {
            ip(&["netns", "add", name])
                .with_context(|| format!("cannot create network namespace {name}"))?;
            ip(&["-n", name, "link", "set", "lo", "up"])
                .with_context(|| format!("cannot bring lo up in {name}"))?;
        }
        for (a, a_if, a_v4, b, b_if, b_v4) in [
            (
                &ns.browser,
                BROWSER_IF,
                BROWSER_V4,
                &ns.proxy,
                PROXY_FRONT_IF,
                PROXY_FRONT_V4,
            ),
            (
                &ns.proxy,
                PROXY_BACK_IF,
                PROXY_BACK_V4,
                &ns.backend,
                BACKEND_IF,
                BACKEND_V4,
            ),
        ] {
            ip(&[
                "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
            ])
            .with_context(|| format!("cannot create the veth pair between {a} and {b}"))?;
            for (name, ifname, v4) in [(a, a_if, a_v4), (b, b_if, b_v4)] {
                let at = || format!("cannot configure {ifname} in namespace {name}");
                ip(&[
                    "-n",
                    name,
                    "addr",
                    "add",
                    &format!("{v4}/30"),
                    "dev",
                    ifname,
                ])
                .with_context(at)?;
                ip(&["-n", name, "link", "set", ifname, "up"]).with_context(at)?;
            }
        }
        // The link the filter watches carries segments of at most one MSS
        // each way, as a link between two hosts does.
        offloads_off(&ns.proxy, PROXY_BACK_IF)?;
        offloads_off(&ns.backend, BACKEND_IF)?;
        Ok(ns)
    }

    pub fn path(name: &str) -> String {
        format!("/run/netns/{name}")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.browser, &self.proxy, &self.backend] {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A test CA and the proxy's certificate (SAN: [`PROXY_HOST`] and
/// [`PROXY_FRONT_V4`]), made with `openssl` in a directory of their own.
pub struct Certs {
    dir: TempDir,
}

impl Certs {
    pub fn make() -> Result<Certs> {
        require(OPENSSL, "openssl")?;
        let certs = Certs {
            dir: TempDir::new("certs")?,
        };
        let d = certs.dir.path();
        let openssl = |args: &[&str]| {
            run_ok(Command::new(OPENSSL).current_dir(d).args(args))
                .with_context(|| format!("openssl {}", args.join(" ")))
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &[
                &["req", "-x509", "-new", "-nodes"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
                &["-subj", "/CN=cors-filter test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req", "-new", "-nodes"][..],
                &ec,
                &["-keyout", "proxy.key", "-out", "proxy.csr"],
                &["-subj", &format!("/CN={PROXY_HOST}")],
            ]
            .concat(),
        )?;
        std::fs::write(
            d.join("proxy.ext"),
            format!(
                "subjectAltName=DNS:{PROXY_HOST},IP:{PROXY_FRONT_V4}\n\
                 basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "proxy.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "proxy.ext",
            "-out",
            "proxy.pem",
        ])?;
        openssl(&["verify", "-CAfile", "ca.pem", "proxy.pem"])?;
        // HAProxy takes the certificate and its key from one file.
        let bundle = [
            std::fs::read(d.join("proxy.pem"))?,
            std::fs::read(d.join("proxy.key"))?,
        ]
        .concat();
        std::fs::write(d.join("proxy-bundle.pem"), bundle)?;
        Ok(certs)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("proxy.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("proxy.key")
    }

    /// The certificate and its key in one file.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("proxy-bundle.pem")
    }
}

/// Which proxy terminates TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// HAProxy, sending a PROXY protocol v2 header first on each backend
    /// connection (`send-proxy-v2`).
    Haproxy,
    /// nginx with an upstream pool of keep-alive connections.
    Nginx,
}

impl ProxyKind {
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Haproxy => "HAProxy",
            ProxyKind::Nginx => "nginx",
        }
    }
}

/// HAProxy's config: TLS on the front, HTTP/1.1 and PROXY v2 to the
/// application, one log line per request on standard output saying how
/// many times it retried (`%rc`) and how the session ended (`%tsc`).
fn haproxy_config(d: &Path, certs: &Certs) -> String {
    let d = d.display();
    let bundle = certs.bundle();
    let bundle = bundle.display();
    let server_ms = PROXY_TIMEOUT.as_millis();
    let connect_ms = PROXY_CONNECT_TIMEOUT.as_millis();
    format!(
        r#"global
    pidfile {d}/haproxy.pid
    log stdout format raw local0 info
    nbthread 1

defaults
    mode http
    log global
    log-format "request %{{+Q}}r origin=%{{+Q}}[capture.req.hdr(0)] status=%ST total_ms=%Ta server_ms=%Tr retries=%rc termination=%tsc backend_connections=%bc"
    timeout connect {connect_ms}ms
    timeout client 30s
    timeout http-request 10s
    timeout http-keep-alive 30s
    timeout server {server_ms}ms
    retries 3

frontend front
    bind {PROXY_FRONT_V4}:{PROXY_PORT} ssl crt {bundle}
    http-request capture req.hdr(Origin) len 100
    http-request return status 200 content-type text/plain string ready hdr Access-Control-Allow-Origin "*" if {{ path {PROXY_READY_PATH} }}
    default_backend app

backend app
    server app {BACKEND_V4}:{BACKEND_PORT} send-proxy-v2
"#
    )
}

/// nginx's config: TLS on the front, an upstream pool of keep-alive
/// connections to the application, an access log saying which upstream
/// connections each request tried.
fn nginx_config(d: &Path, certs: &Certs) -> String {
    let d = d.display();
    let (cert, key) = (certs.cert(), certs.key());
    let (cert, key) = (cert.display(), key.display());
    let read_ms = PROXY_TIMEOUT.as_millis();
    let connect_ms = PROXY_CONNECT_TIMEOUT.as_millis();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format proxied 'request "$request" origin="$http_origin" status=$status total_s=$request_time upstreams=[$upstream_addr] upstream_status=[$upstream_status] upstream_s=[$upstream_response_time]';
    access_log {d}/nginx-access.log proxied;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream app {{
        server {BACKEND_V4}:{BACKEND_PORT};
        keepalive 16;
    }}
    server {{
        listen {PROXY_FRONT_V4}:{PROXY_PORT} ssl;
        server_name {PROXY_HOST};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        keepalive_requests 100000;
        location = {PROXY_READY_PATH} {{
            add_header Access-Control-Allow-Origin "*" always;
            default_type text/plain;
            return 200 "ready";
        }}
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout {connect_ms}ms;
            proxy_send_timeout {read_ms}ms;
            proxy_read_timeout {read_ms}ms;
        }}
    }}
}}
"#
    )
}

/// A running proxy in the proxy namespace; stopped on drop.
pub struct Proxy {
    pub kind: ProxyKind,
    process: Guarded,
    /// Where it logs each request.
    log: PathBuf,
    /// Its own messages.
    out: PathBuf,
}

impl Proxy {
    fn start(kind: ProxyKind, ns: &str, d: &Path, certs: &Certs) -> Result<Proxy> {
        let (program, package) = match kind {
            ProxyKind::Haproxy => (HAPROXY, "haproxy"),
            ProxyKind::Nginx => (NGINX, "nginx"),
        };
        require(program, package)?;
        let out = d.join(format!("{package}.out"));
        let out_file = std::fs::File::create(&out)?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        let log = match kind {
            ProxyKind::Haproxy => {
                let conf = d.join("haproxy.cfg");
                std::fs::write(&conf, haproxy_config(d, certs))?;
                // -db: in the foreground, one process; the request log
                // goes to standard output.
                command.arg("-db").arg("-f").arg(&conf);
                out.clone()
            }
            ProxyKind::Nginx => {
                let conf = d.join("nginx.conf");
                std::fs::write(&conf, nginx_config(d, certs))?;
                command
                    .arg("-p")
                    .arg(d)
                    .arg("-e")
                    .arg(d.join("nginx-error.log"))
                    .arg("-c")
                    .arg(&conf);
                d.join("nginx-access.log")
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(out_file.try_clone()?)
            .stderr(out_file);
        die_with_parent(&mut command, libc::SIGKILL);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {program} in namespace {ns}"))?;
        let mut process = Guarded {
            child,
            name: kind.name().to_owned(),
        };
        let shown = out.clone();
        let error_log = d.join("nginx-error.log");
        process.wait_ready(
            START_LIMIT,
            Duration::from_millis(50),
            || listening(ns, PROXY_PORT),
            || {
                let mut text = std::fs::read_to_string(&shown).unwrap_or_default();
                text += &std::fs::read_to_string(&error_log).unwrap_or_default();
                text
            },
        )?;
        Ok(Proxy {
            kind,
            process,
            log,
            out,
        })
    }

    /// The proxy's request log so far, a line per request.
    pub fn request_log(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with("request "))
            .map(str::to_owned)
            .collect()
    }

    /// What the proxy printed of its own (warnings, errors).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Whether the proxy is still running.
    pub fn running(&mut self) -> bool {
        self.process.exited().is_none()
    }
}

/// Whether something listens on TCP `port` in namespace `ns`.
fn listening(ns: &str, port: u16) -> Result<bool> {
    let out = run_ok(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "ss",
        "-Hltn",
        &format!("sport = :{port}"),
    ]))?;
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// Where cors-filter runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "XDP",
            Hook::Tc => "TC",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Hook::Xdp => &[],
            Hook::Tc => &["--attach", "tc"],
        }
    }
}

/// cors-filter on the backend's interface, with what it needs on the
/// proxy's side; stopped, its pins removed, on drop.
pub struct Filter {
    /// Declared first: the filter goes before the peer's program.
    pub filter: RunningFilter,
    pub home: FilterHome,
    /// Native XDP's reset (`XDP_TX`) on veth reaches the proxy at once only
    /// if the proxy's end runs an XDP program too (see `bare_xdp`).
    _peer_xdp: Option<BareXdp>,
}

/// The whole bed. Fields drop in order: the proxy, then the application,
/// then the namespaces, then the files.
pub struct ProxyBed {
    pub proxy: Proxy,
    pub backend: TestServer,
    pub ns: Namespaces,
    pub certs: Certs,
    dir: TempDir,
}

impl ProxyBed {
    /// The namespaces, certificates, the application (`server_binary`,
    /// `cors-test-server`: with keep-alive, and for HAProxy requiring a
    /// PROXY header on each connection) and the proxy `kind`.
    pub fn new(kind: ProxyKind, server_binary: &Path) -> Result<ProxyBed> {
        require_root()?;
        let dir = TempDir::new("proxy-bed")?;
        let certs = Certs::make()?;
        let ns = Namespaces::create()?;
        let mut args = vec![
            "--keep-alive".to_owned(),
            "--read-timeout-ms".to_owned(),
            BACKEND_IDLE.as_millis().to_string(),
        ];
        if kind == ProxyKind::Haproxy {
            args.push("--proxy-protocol".to_owned());
        }
        let backend = TestServer::start_in_with_options(
            &ns.backend,
            server_binary,
            &[format!("{BACKEND_V4}:{BACKEND_PORT}")],
            &ServerOptions {
                args,
                log_connections: true,
                ..ServerOptions::default()
            },
        )?;
        let proxy = Proxy::start(kind, &ns.proxy, dir.path(), &certs)?;
        Ok(ProxyBed {
            proxy,
            backend,
            ns,
            certs,
            dir,
        })
    }

    /// Starts cors-filter at `hook` on the backend's interface with
    /// `config_toml`, and waits until it is attached.
    pub fn filter(&self, hook: Hook, config_toml: &str) -> Result<Filter> {
        let peer_xdp = match hook {
            Hook::Xdp => Some(BareXdp::attach(
                BareAction::Pass,
                &Namespaces::path(&self.ns.proxy),
                PROXY_BACK_IF,
            )?),
            Hook::Tc => None,
        };
        let home = FilterHome::new(config_toml)?;
        let filter =
            RunningFilter::start_in(&cors_filter_bin()?, &self.ns.backend, &home, hook.args())?;
        Ok(Filter {
            filter,
            home,
            _peer_xdp: peer_xdp,
        })
    }

    /// The bed's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of `path` on the proxy.
    pub fn url(path: &str) -> String {
        format!("https://{PROXY_HOST}{path}")
    }

    /// curl in the browser namespace over HTTPS to the proxy, trusting
    /// the test CA only: `args`, then the proxy's URL for `path`. Each
    /// transfer is bounded by [`CURL_MAX_TIME`], the whole run by
    /// [`CURL_RUN_LIMIT`].
    pub fn curl_raw(&self, args: &[&str], path: &str) -> Result<Output> {
        let url = ProxyBed::url(path);
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns.browser, "curl", "-sS"])
            .arg("--cacert")
            .arg(self.certs.ca())
            .args([
                "--resolve",
                &format!("{PROXY_HOST}:{PROXY_PORT}:{PROXY_FRONT_V4}"),
            ])
            .args(["--max-time", &CURL_MAX_TIME.as_secs().to_string()])
            .args(args)
            .arg(&url);
        run_bounded(&mut command, CURL_RUN_LIMIT)
            .with_context(|| format!("curl {url} in namespace {}", self.ns.browser))
    }

    /// One request with curl (see [`ProxyBed::curl_raw`]), whatever its
    /// outcome: an [`Attempt`].
    pub fn curl(&self, args: &[&str], path: &str) -> Result<Attempt> {
        let mut all = vec![
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-w",
            "CURL-STATUS %{http_code} %{time_connect} %{time_total}\n",
        ];
        all.extend(args);
        let started = Instant::now();
        let output = self.curl_raw(&all, path)?;
        let run = CurlRun::of(output, started.elapsed())?;
        Ok(Attempt::of(&run))
    }

    /// A preflight as a browser sends it before a cross-origin PUT with a
    /// JSON body, from `origin`, to `path`.
    pub fn preflight(&self, origin: &str, path: &str) -> Result<Attempt> {
        self.curl(
            &[
                "-X",
                "OPTIONS",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Access-Control-Request-Method: PUT",
                "-H",
                "Access-Control-Request-Headers: content-type",
            ],
            path,
        )
    }

    /// The PUT that follows an allowed preflight.
    pub fn put(&self, origin: &str, path: &str) -> Result<Attempt> {
        self.curl(
            &[
                "-X",
                "PUT",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Content-Type: application/json",
                "--data-raw",
                r#"{"name":"item"}"#,
            ],
            path,
        )
    }

    /// Whether a TCP connection from the browser namespace to the backend
    /// can be made: it must not (nothing routes there but the proxy).
    pub fn browser_reaches_backend(&self) -> Result<bool> {
        let path = Namespaces::path(&self.ns.browser);
        std::thread::spawn(move || {
            enter_netns(&path)?;
            let addr = SocketAddr::new(BACKEND_V4.parse()?, BACKEND_PORT);
            Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))?
    }
}

/// How long the proxied page waits for its fetch: past the proxy's
/// timeout, so that what the browser makes of the proxy's own answer is
/// what the page reports.
pub const PAGE_WAIT: Duration = Duration::from_secs(8);
/// How many times the page tries [`PROXY_READY_PATH`], 250 ms apart.
pub const READY_TRIES: u32 = 20;
/// The path the page's PUT (and so its preflight) goes to.
pub const PAGE_PUT_PATH: &str = "/api/items/1";

/// The page for [`crate::harness::browser::PageServer::start_in`]: first it fetches
/// [`PROXY_READY_PATH`] from the proxy until that works (the browser
/// trusts the proxy's certificate, at most [`READY_TRIES`] tries); then,
/// with `run=put`, it sends a PUT with a JSON body and an `X-Token` header
/// (preflighted) to `https://api.proxy.test/api/items/1` and reports
/// `status=N body=TEXT ms=N ready_tries=N` or `error=NAME ms=N
/// ready_tries=N` as scenario `put`, the protocol of [`crate::harness::browser`]'s
/// page (`frame=URL` loads more pages in iframes).
pub fn page_html() -> String {
    const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>cors-filter behind a TLS proxy</title></head>
<body>
<script>
"use strict";
const TARGET = "{TARGET}";
const READY = "{READY}";
const READY_TRIES = {READY_TRIES};
const WAIT_MS = {WAIT_MS};
let readyTries = 0;

function report(scenario, result) {
  const query = new URLSearchParams({ from: location.origin, scenario, result });
  return fetch("/report?" + query, { cache: "no-store" });
}
window.addEventListener("error", (e) => report("page", "error=" + e.message));
window.addEventListener("unhandledrejection", (e) => report("page", "error=" + e.reason));

// Until the proxy answers over TLS (the browser may still be loading its
// trust store): its own answer, which never reaches the application.
async function ready() {
  while (readyTries < READY_TRIES) {
    readyTries += 1;
    try {
      // Bounded: a handshake that hangs must not use up the visit.
      const answer = await fetch(READY, { cache: "no-store", signal: AbortSignal.timeout(1000) });
      if (answer.ok) return;
    } catch (e) {}
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function put() {
  await ready();
  const started = performance.now();
  const ms = () => " ms=" + Math.round(performance.now() - started) + " ready_tries=" + readyTries;
  try {
    const answer = await fetch(TARGET, {
      method: "PUT",
      headers: { "Content-Type": "application/json", "X-Token": "t0k3n" },
      body: JSON.stringify({ name: "item" }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    const body = await answer.text();
    return "status=" + answer.status + " body=" + body.trim() + ms();
  } catch (e) {
    return "error=" + e.name + ms();
  }
}

async function main() {
  const params = new URLSearchParams(location.search);
  for (const src of params.getAll("frame")) {
    const frame = document.createElement("iframe");
    frame.src = src;
    document.body.append(frame);
  }
  for (const name of params.getAll("run")) {
    await report(name, name === "put" ? await put() : "error=unknown scenario");
  }
}
main();
</script>
</body>
</html>
"#;
    PAGE.replace("{TARGET}", &ProxyBed::url(PAGE_PUT_PATH))
        .replace("{READY}", &ProxyBed::url(PROXY_READY_PATH))
        .replace("{READY_TRIES}", &READY_TRIES.to_string())
        .replace("{WAIT_MS}", &PAGE_WAIT.as_millis().to_string())
}

/// Chromium's flags for the bed: the proxy's host name resolves to its
/// address (the browser namespace has no resolver).
pub fn chromium_flags() -> Vec<String> {
    vec![format!(
        "--host-resolver-rules=MAP {PROXY_HOST} {PROXY_FRONT_V4}"
    )]
}
