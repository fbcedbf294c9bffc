//! A connection flood, as a local user would aim it at the filter's
//! `/metrics` port: opens up to `--count` TCP connections to `--connect`,
//! sending nothing, and holds them.
//!
//! Once every connection is tried (or `--open-limit-ms` has passed), it
//! prints one JSON line: `{"opened":N,"failed":F,"first_error":E}`; a
//! second after that, `{"closed_by_peer":C,"held":H}` (how many of the
//! opened connections the server had closed by then, and how many it still
//! held or had not accepted yet). It then holds the connections until its
//! standard input closes or `--hold-secs` pass, and exits.
//!
//! Usage: cors-test-flood --connect ADDR --count N [--hold-secs S]
//!        [--open-limit-ms MS]

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// How long one connect may take: a full accept queue makes the kernel
/// retry the SYN after a second.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> Result<()> {
    // Never outlive the test that started us. Set here, after setpriv
    // changed the credentials (which clears it).
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let mut connect: Option<SocketAddr> = None;
    let mut count = 0usize;
    let mut hold = Duration::from_secs(30);
    let mut open_limit = Duration::from_secs(30);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--connect" => connect = Some(value()?.parse()?),
            "--count" => count = value()?.parse()?,
            "--hold-secs" => hold = Duration::from_secs(value()?.parse()?),
            "--open-limit-ms" => open_limit = Duration::from_millis(value()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    let connect = connect.context("--connect is required")?;

    let started = Instant::now();
    let mut open = Vec::with_capacity(count);
    let (mut failed, mut first_error) = (0usize, None::<String>);
    for _ in 0..count {
        if started.elapsed() > open_limit {
            break;
        }
        match TcpStream::connect_timeout(&connect, CONNECT_TIMEOUT) {
            Ok(stream) => open.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({ "opened": open.len(), "failed": failed, "first_error": first_error })
    );
    std::io::stdout().flush()?;

    std::thread::sleep(Duration::from_secs(1));
    let mut closed_by_peer = 0usize;
    for stream in &mut open {
        stream.set_nonblocking(true)?;
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => closed_by_peer += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => closed_by_peer += 1,
            Ok(_) => {}
        }
    }
    println!(
        "{}",
        serde_json::json!({ "closed_by_peer": closed_by_peer, "held": open.len() - closed_by_peer })
    );
    std::io::stdout().flush()?;

    // Held until stdin closes (the test is done) or the time is up.
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = done.send(());
    });
    let _ = wait.recv_timeout(hold);
    drop(open);
    Ok(())
}
