//! A real browser against the filter: headless Chromium in the client
//! namespace loads a test page from the page server there, and the page's
//! script makes cross-origin requests to the test server in the server
//! namespace, then reports each outcome back to its own origin, where the
//! page server logs it.
//!
//! The page server is `cors-test-server --page FILE` listening on two ports
//! of the client address: two origins, one a test allows and one it does
//! not. The client namespace has no route but the veth pair, so nothing
//! Chromium tries reaches past the two namespaces.

use std::{
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    TempDir,
    harness::netns::{CLIENT_V4, NetnsPair, SERVER_V4},
    harness::process::{die_with_parent, run_ok},
    harness::server::{self, TestServer},
};

/// Debian's Chromium binary. The `/usr/bin/chromium` wrapper would add
/// Debian's default flags (remote extensions among them) and Google API
/// keys to the environment: the tests choose every flag themselves.
pub const CHROMIUM: &str = "/usr/lib/chromium/chromium";
/// The page's two origins: `http://CLIENT_V4:PORT`.
pub const ALLOWED_PAGE_PORT: u16 = 8001;
pub const DENIED_PAGE_PORT: u16 = 8002;
/// How long the page waits for an answer to a cross-origin request. The
/// filter drops a denied request (its default action), so the browser would
/// wait for the TCP timeout; an allowed one is answered in milliseconds.
pub const ANSWER_WAIT: Duration = Duration::from_secs(4);
/// How long a test waits for the page's reports, Chromium's start included
/// (under a second on an idle machine).
pub const REPORT_LIMIT: Duration = Duration::from_secs(20);

/// What the page's script can do, each reported under its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `fetch` PUT with a JSON body and an `X-Token` header: not a simple
    /// request, so the browser sends a preflight first. Reports
    /// `status=N body=TEXT`, or `error=NAME` when the fetch fails.
    Put,
    /// A form `POST` (urlencoded, no preflight) submitted by script into a
    /// hidden iframe: the CSRF case. Reports `loaded` when the frame got an
    /// answer, `no-answer` when none came within [`ANSWER_WAIT`].
    Form,
    /// [`Scenario::Put`] to a URL of [`LONG_URL`] bytes (a long query).
    PutLongUrl,
    /// [`Scenario::Put`] to a URL of [`LONGER_URL`] bytes: its preflight's
    /// head spans several TCP segments.
    PutLongerUrl,
    /// [`Scenario::Put`] with [`long_header_names`] too, each with the value
    /// `v`: the preflight's `Access-Control-Request-Headers` lists them all.
    PutManyHeaders,
    /// `fetch` POST of [`UPLOAD_LEN`] bytes of single-line JSON as
    /// `text/plain`: a simple request, no preflight. Reports `status=N
    /// body=TEXT read=LEN`, `LEN` being how many bytes of the body the
    /// server says it read, or `error=NAME`.
    UploadText,
    /// The same upload as `application/json`: preflighted.
    UploadJson,
    /// [`Scenario::Form`] with an action URL of [`LONG_URL`] bytes.
    FormLongUrl,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Put,
        Scenario::Form,
        Scenario::PutLongUrl,
        Scenario::PutLongerUrl,
        Scenario::PutManyHeaders,
        Scenario::UploadText,
        Scenario::UploadJson,
        Scenario::FormLongUrl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Put => "put",
            Scenario::Form => "form",
            Scenario::PutLongUrl => "put-long-url",
            Scenario::PutLongerUrl => "put-longer-url",
            Scenario::PutManyHeaders => "put-many-headers",
            Scenario::UploadText => "upload-text",
            Scenario::UploadJson => "upload-json",
            Scenario::FormLongUrl => "form-long-url",
        }
    }

    /// The path (with its query) the scenario's request goes to on the
    /// test server, as the server's log shows it.
    pub fn path(self) -> String {
        match self {
            Scenario::Put => PUT_PATH.to_owned(),
            Scenario::Form => FORM_PATH.to_owned(),
            Scenario::PutLongUrl => long_path("/api/items/long", LONG_URL),
            Scenario::PutLongerUrl => long_path("/api/items/longer", LONGER_URL),
            Scenario::PutManyHeaders => "/api/items/many-headers".to_owned(),
            Scenario::UploadText => "/upload/text".to_owned(),
            Scenario::UploadJson => "/upload/json".to_owned(),
            Scenario::FormLongUrl => long_path("/transfer/long", LONG_URL),
        }
    }
}

/// The path the PUT goes to, and the form's action path.
pub const PUT_PATH: &str = "/api/items/1";
pub const FORM_PATH: &str = "/transfer";
/// The length of the long URLs, `http://` to the end of the query: past the
/// 1024 bytes of a segment the kernel program reads today, within one
/// segment.
pub const LONG_URL: usize = 1000;
/// Longer still: the request line alone spans three segments.
pub const LONGER_URL: usize = 3000;
/// How many long header names [`Scenario::PutManyHeaders`] sends, and how
/// long each is.
pub const LONG_HEADERS: usize = 14;
pub const LONG_HEADER_NAME: usize = 64;
/// The size of the uploads' body.
pub const UPLOAD_LEN: usize = 5_000_000;
/// How long the page waits for the answer to an upload: seconds on a busy
/// machine, where an allowed one takes well under one.
pub const UPLOAD_WAIT: Duration = Duration::from_secs(10);

/// `prefix?pad=aaa...`, as long as makes the URL (the test server's origin
/// and this path) `url_len` bytes.
fn long_path(prefix: &str, url_len: usize) -> String {
    let head = format!("{prefix}?pad=");
    let pad = url_len - server_origin().len() - head.len();
    format!("{head}{}", "a".repeat(pad))
}

/// The custom request header names of [`Scenario::PutManyHeaders`]:
/// `X-Aaaa...-01` to `-14`, [`LONG_HEADER_NAME`] bytes each.
pub fn long_header_names() -> Vec<String> {
    (1..=LONG_HEADERS)
        .map(|i| {
            let tail = format!("-{i:02}");
            format!("X-{}{tail}", "a".repeat(LONG_HEADER_NAME - 2 - tail.len()))
        })
        .collect()
}

/// The page. `{SERVER}`, `{WAIT_MS}` and the other `{NAME}`s are filled in
/// by [`page_html`].
/// Its query says what to do: `run=SCENARIO` (repeatable, run in order)
/// and `frame=URL` (repeatable: a page loaded in an iframe, which runs its
/// own query; this is how one Chromium run covers two origins, as headless
/// Chromium opens a single URL).
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>cors-filter browser test</title></head>
<body>
<script>
"use strict";
const SERVER = "{SERVER}";
const WAIT_MS = {WAIT_MS};
const UPLOAD_WAIT_MS = {UPLOAD_WAIT_MS};
const UPLOAD_LEN = {UPLOAD_LEN};
// Scenario name -> the path (and query) its request goes to.
const PATHS = {PATHS};
const LONG_HEADER_NAMES = {LONG_HEADER_NAMES};

function report(scenario, result) {
  const query = new URLSearchParams({ from: location.origin, scenario, result });
  return fetch("/report?" + query, { cache: "no-store" });
}
// A broken page shows up in the test's error instead of a silent timeout.
window.addEventListener("error", (e) => report("page", "error=" + e.message));
window.addEventListener("unhandledrejection", (e) => report("page", "error=" + e.reason));

async function put(path, extraHeaders = {}) {
  try {
    const answer = await fetch(SERVER + path, {
      method: "PUT",
      headers: { "Content-Type": "application/json", "X-Token": "t0k3n", ...extraHeaders },
      body: JSON.stringify({ name: "item" }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    const body = await answer.text();
    return "status=" + answer.status + " body=" + body.trim();
  } catch (e) {
    return "error=" + e.name;
  }
}

// One line of JSON, UPLOAD_LEN bytes, posted as `type`.
async function upload(path, type) {
  const open = '{"items":["', close = '"]}';
  const body = open + "x".repeat(UPLOAD_LEN - open.length - close.length) + close;
  try {
    const answer = await fetch(SERVER + path, {
      method: "POST",
      headers: { "Content-Type": type },
      body,
      signal: AbortSignal.timeout(UPLOAD_WAIT_MS),
    });
    const text = await answer.text();
    return "status=" + answer.status + " body=" + text.trim() +
      " read=" + answer.headers.get("X-Body-Length");
  } catch (e) {
    return "error=" + e.name;
  }
}

function form(path) {
  return new Promise((resolve) => {
    const name = "sink-" + location.port;
    const sink = document.createElement("iframe");
    sink.name = name;
    sink.hidden = true;
    document.body.append(sink);
    // The empty frame's own about:blank is same-origin; once the server's
    // answer is in it, reading its location throws.
    sink.addEventListener("load", () => {
      try {
        sink.contentWindow.location.href;
      } catch {
        resolve("loaded");
      }
    });
    setTimeout(() => resolve("no-answer"), WAIT_MS);
    const form = document.createElement("form");
    form.method = "post";
    form.action = SERVER + path;
    form.target = name;
    const field = document.createElement("input");
    field.name = "amount";
    field.value = "100";
    form.append(field);
    document.body.append(form);
    form.submit();
  });
}

async function main() {
  const params = new URLSearchParams(location.search);
  for (const src of params.getAll("frame")) {
    const frame = document.createElement("iframe");
    frame.src = src;
    document.body.append(frame);
  }
  const manyHeaders = Object.fromEntries(LONG_HEADER_NAMES.map((name) => [name, "v"]));
  const scenarios = {
    "put": () => put(PATHS["put"]),
    "form": () => form(PATHS["form"]),
    "put-long-url": () => put(PATHS["put-long-url"]),
    "put-longer-url": () => put(PATHS["put-longer-url"]),
    "put-many-headers": () => put(PATHS["put-many-headers"], manyHeaders),
    "upload-text": () => upload(PATHS["upload-text"], "text/plain"),
    "upload-json": () => upload(PATHS["upload-json"], "application/json"),
    "form-long-url": () => form(PATHS["form-long-url"]),
  };
  for (const name of params.getAll("run")) {
    const run = scenarios[name];
    await report(name, run ? await run() : "error=unknown scenario");
  }
}
main();
</script>
</body>
</html>
"#;

/// The page, aimed at the test server.
pub fn page_html() -> String {
    let paths: serde_json::Map<String, serde_json::Value> = Scenario::ALL
        .iter()
        .map(|s| (s.name().to_owned(), s.path().into()))
        .collect();
    PAGE.replace("{SERVER}", &server_origin())
        .replace("{WAIT_MS}", &ANSWER_WAIT.as_millis().to_string())
        .replace("{UPLOAD_WAIT_MS}", &UPLOAD_WAIT.as_millis().to_string())
        .replace("{UPLOAD_LEN}", &UPLOAD_LEN.to_string())
        .replace("{PATHS}", &serde_json::Value::Object(paths).to_string())
        .replace(
            "{LONG_HEADER_NAMES}",
            &serde_json::Value::from(long_header_names()).to_string(),
        )
}

/// The test server's origin, as the page's requests go to it.
pub fn server_origin() -> String {
    format!("http://{SERVER_V4}:{}", server::PORT)
}

/// The page's origin on `port`.
pub fn page_origin(port: u16) -> String {
    format!("http://{CLIENT_V4}:{port}")
}

/// The page's URL on `port`: it runs `run`, and loads each of `frames`
/// (page URLs too) in an iframe.
pub fn page_url(port: u16, run: &[Scenario], frames: &[String]) -> String {
    let query: Vec<String> = run
        .iter()
        .map(|s| format!("run={}", s.name()))
        .chain(
            frames
                .iter()
                .map(|f| format!("frame={}", percent_encode(f))),
        )
        .collect();
    format!("{}/?{}", page_origin(port), query.join("&"))
}

/// One outcome the page reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The reporting page's origin.
    pub from: String,
    /// A [`Scenario::name`], or `page` for a script error.
    pub scenario: String,
    pub result: String,
}

/// `cors-test-server --page` in the client namespace, on both page ports.
pub struct PageServer {
    server: TestServer,
    _page: TempDir,
}

impl PageServer {
    /// `binary` is `cors-test-server`.
    pub fn start(pair: &NetnsPair, binary: &Path) -> Result<PageServer> {
        PageServer::start_in(&pair.client, binary, &page_html())
    }

    /// A page server serving `html` in namespace `ns`, whose address is
    /// [`CLIENT_V4`], on both page ports.
    pub fn start_in(ns: &str, binary: &Path, html: &str) -> Result<PageServer> {
        let dir = TempDir::new("page")?;
        let page = dir.path().join("page.html");
        std::fs::write(&page, html).with_context(|| format!("cannot write {}", page.display()))?;
        let page_arg = page
            .to_str()
            .context("the temporary directory is not UTF-8")?;
        let listen = [ALLOWED_PAGE_PORT, DENIED_PAGE_PORT].map(|p| format!("{CLIENT_V4}:{p}"));
        let server = TestServer::start_in(ns, binary, &listen, &["--page", page_arg])
            .context("cannot start the page server")?;
        Ok(PageServer { server, _page: dir })
    }

    /// Every report received so far, in order.
    pub fn reports(&self) -> Result<Vec<Report>> {
        Ok(self
            .server
            .seen()?
            .iter()
            .filter_map(|seen| seen.path.strip_prefix("/report?").map(parse_report))
            .collect())
    }
}

fn parse_report(query: &str) -> Report {
    let mut report = Report {
        from: String::new(),
        scenario: String::new(),
        result: String::new(),
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "from" => report.from = value,
            "scenario" => report.scenario = value,
            "result" => report.result = value,
            _ => {}
        }
    }
    report
}

/// The result `from` reported for `scenario`, if it did.
pub fn result_of<'a>(reports: &'a [Report], from: &str, scenario: Scenario) -> Option<&'a str> {
    reports
        .iter()
        .find(|r| r.from == from && r.scenario == scenario.name())
        .map(|r| r.result.as_str())
}

/// Headless Chromium in the client namespace on one URL, with a fresh
/// profile. Its whole process group is killed on drop, then the profile
/// removed.
pub struct Chromium {
    child: Child,
    url: String,
    closed: bool,
    /// Dropped after the kill in `drop`.
    profile: TempDir,
}

impl Chromium {
    pub fn open(pair: &NetnsPair, url: &str) -> Result<Chromium> {
        Chromium::open_in(&pair.client, url, &ChromiumOptions::default())
    }

    /// Chromium in namespace `ns` on `url`, as `options` say.
    pub fn open_in(ns: &str, url: &str, options: &ChromiumOptions) -> Result<Chromium> {
        if !Path::new(CHROMIUM).is_file() {
            bail!("{CHROMIUM} not found: install Debian's chromium (`cargo xtask setup`)");
        }
        let profile = TempDir::new("chromium")?;
        let log_path = profile.path().join("chromium.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let data = profile.path().join("data");
        // Chromium's own temporary files (its singleton socket's directory)
        // go under the profile too, so that removing it leaves nothing.
        let tmp = profile.path().join("tmp");
        std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        if let Some(ca) = options.trust_ca {
            trust_ca(profile.path(), ca)?;
        }
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, CHROMIUM])
            // Root needs --no-sandbox; the page is the tests' own.
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .args(QUIET_FLAGS)
            .args(options.flags)
            .arg(format!("--user-data-dir={}", data.display()))
            .arg(url)
            // Whatever Chromium writes outside its profile (crash reports,
            // dconf, caches) goes to the profile directory too.
            .env("HOME", profile.path())
            .env("XDG_CONFIG_HOME", profile.path().join("config"))
            .env("XDG_CACHE_HOME", profile.path().join("cache"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group, so that its helper processes die with it.
            .process_group(0);
        die_with_parent(&mut command, libc::SIGKILL);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {CHROMIUM} in namespace {ns}"))?;
        Ok(Chromium {
            child,
            url: url.to_owned(),
            closed: false,
            profile,
        })
    }

    /// What Chromium printed so far, but its complaints that there is no
    /// D-Bus (there is none in a test namespace, and it needs none).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.contains(":ERROR:dbus/"))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// Kills the process group with SIGKILL and reaps the browser, then
    /// kills what is left of this run: Chromium's crash handlers run in
    /// sessions of their own, and are found by the profile path their
    /// command lines name. Waits (bounded) until they are gone, so that
    /// the profile can be removed.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill on the group of a child we have not reaped.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
        let mine = format!("{}/", self.profile.path().display());
        let deadline = Instant::now() + CLOSE_LIMIT;
        loop {
            let left = processes_naming(&mine);
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("Chromium processes {left:?} outlived {CLOSE_LIMIT:?} after SIGKILL");
                return;
            }
            for pid in left {
                // SAFETY: kill on a process of this Chromium run.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How Chromium is started, beyond [`Chromium::open`]'s defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChromiumOptions<'a> {
    /// More flags, e.g. `--host-resolver-rules=...`.
    pub flags: &'a [String],
    /// A CA certificate (PEM) Chromium trusts for TLS servers: put in the
    /// NSS database of its `HOME` (`~/.pki/nssdb`), where Chromium on Linux
    /// reads the user's trusted roots, with Debian's `certutil`.
    pub trust_ca: Option<&'a Path>,
    /// How long the visit waits for the reports ([`REPORT_LIMIT`] if `None`).
    pub report_limit: Option<Duration>,
}

/// Debian's `certutil` (package libnss3-tools).
pub const CERTUTIL: &str = "/usr/bin/certutil";

/// Makes `home/.pki/nssdb` a new NSS database that trusts `ca` to issue
/// TLS server certificates.
fn trust_ca(home: &Path, ca: &Path) -> Result<()> {
    if !Path::new(CERTUTIL).is_file() {
        bail!("{CERTUTIL} not found: install Debian's libnss3-tools (`cargo xtask setup`)");
    }
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).with_context(|| format!("cannot create {}", db.display()))?;
    let db = format!("sql:{}", db.display());
    run_ok(Command::new(CERTUTIL).args(["-N", "-d", &db, "--empty-password"]))
        .context("cannot create Chromium's NSS database")?;
    run_ok(
        Command::new(CERTUTIL)
            .args([
                "-A",
                "-d",
                &db,
                "-n",
                "cors-filter test CA",
                "-t",
                "C,,",
                "-i",
            ])
            .arg(ca),
    )
    .context("cannot add the test CA to Chromium's NSS database")?;
    Ok(())
}

/// How long [`Chromium::close`] waits for the last processes to go.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// The processes whose command line contains `needle`.
fn processes_naming(needle: &str) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .collect()
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.close();
    }
}

/// Flags that keep Chromium from reaching anywhere by itself (the namespace
/// has no route out anyway), from reading a proxy from the environment, and
/// from starting helpers the tests do not need.
const QUIET_FLAGS: &[&str] = &[
    "--no-proxy-server",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-field-trial-config",
    // Not --disable-crashpad-for-testing: Chromium 156's network service
    // crashes with it ("FD ownership violation").
    "--disable-breakpad",
    "--no-pings",
    "--metrics-recording-only",
    "--password-store=basic",
    "--mute-audio",
    "--disable-features=OptimizationHints,Translate,MediaRouter,AutofillServerCommunication,\
     CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
];

/// Opens `url` in Chromium and waits until every `(origin, scenario)` of
/// `expected` is reported, at most [`REPORT_LIMIT`]; Chromium is killed
/// before this returns, so no retransmission of a dropped request moves the
/// filter's counters afterwards. Returns all reports.
pub fn visit(
    pair: &NetnsPair,
    pages: &PageServer,
    url: &str,
    expected: &[(&str, Scenario)],
) -> Result<Vec<Report>> {
    visit_in(
        &pair.client,
        pages,
        url,
        expected,
        &ChromiumOptions::default(),
    )
}

/// [`visit`] with Chromium in namespace `ns`, started as `options` say.
pub fn visit_in(
    ns: &str,
    pages: &PageServer,
    url: &str,
    expected: &[(&str, Scenario)],
    options: &ChromiumOptions,
) -> Result<Vec<Report>> {
    let mut browser = Chromium::open_in(ns, url, options)?;
    let limit = options.report_limit.unwrap_or(REPORT_LIMIT);
    let deadline = Instant::now() + limit;
    loop {
        let reports = pages.reports()?;
        let missing: Vec<_> = expected
            .iter()
            .filter(|(from, scenario)| result_of(&reports, from, *scenario).is_none())
            .collect();
        if missing.is_empty() {
            browser.close();
            return Ok(reports);
        }
        if let Ok(Some(status)) = browser.child.try_wait() {
            bail!(
                "Chromium exited ({status}) on {url} before the page reported {missing:?}; \
                 reports {reports:?}; it said:\n{}",
                browser.log()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "no report of {missing:?} from {} within {limit:?}; reports {reports:?}; \
                 Chromium said:\n{}",
                browser.url,
                browser.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `s` with every byte but the URL-unreserved ones as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes a query value as `URLSearchParams` writes it: `+` is a space.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_decoded() {
        let report = parse_report(
            "from=http%3A%2F%2F198.18.0.1%3A8001&scenario=put&result=status%3D200+body%3Dok",
        );
        assert_eq!(
            report,
            Report {
                from: "http://198.18.0.1:8001".into(),
                scenario: "put".into(),
                result: "status=200 body=ok".into(),
            }
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn frame_urls_are_encoded() {
        let inner = page_url(ALLOWED_PAGE_PORT, &[Scenario::Form], &[]);
        assert_eq!(inner, "http://198.18.0.1:8001/?run=form");
        assert_eq!(
            page_url(DENIED_PAGE_PORT, &[Scenario::Form], &[inner]),
            "http://198.18.0.1:8002/?run=form&frame=http%3A%2F%2F198.18.0.1%3A8001%2F%3Frun%3Dform"
        );
    }

    #[test]
    fn page_is_filled_in() {
        let html = page_html();
        assert!(
            html.contains("const SERVER = \"http://198.18.0.2:8080\";"),
            "{html}"
        );
        assert!(html.contains("const WAIT_MS = 4000;"));
        assert!(html.contains("const UPLOAD_LEN = 5000000;"));
        assert!(html.contains(r#""put":"/api/items/1""#), "{html}");
        assert!(html.contains(r#""form":"/transfer""#), "{html}");
        for name in ["{PATHS}", "{LONG_HEADER_NAMES}", "{UPLOAD_WAIT_MS}"] {
            assert!(!html.contains(name), "{name} left in the page");
        }
        // Every scenario has its entry in the page's table.
        for scenario in Scenario::ALL {
            assert!(
                html.contains(&format!("\"{}\": () =>", scenario.name())),
                "{scenario:?}"
            );
        }
    }

    #[test]
    fn long_urls_and_header_names_have_their_lengths() {
        for (scenario, len) in [
            (Scenario::PutLongUrl, LONG_URL),
            (Scenario::PutLongerUrl, LONGER_URL),
            (Scenario::FormLongUrl, LONG_URL),
        ] {
            assert_eq!(server_origin().len() + scenario.path().len(), len);
        }
        let names = long_header_names();
        assert_eq!(names.len(), LONG_HEADERS);
        assert!(
            names.iter().all(|n| n.len() == LONG_HEADER_NAME),
            "{names:?}"
        );
        assert_eq!(
            names[0],
            format!("X-{}-01", "a".repeat(LONG_HEADER_NAME - 5))
        );
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique, names);
    }
}
