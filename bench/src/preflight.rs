//! The browser preflight both parts send: Chrome's header order and values.

/// Path of the preflight's request line.
pub const PATH: &str = "/api/items/42";

/// The origin the end-to-end parts' preflights come from: not allowed.
pub const DENIED_ORIGIN: &str = "https://evil.example";

/// The header lines of a browser's preflight from `origin`, all but `Host`
/// and `Connection` (wrk writes `Host` itself, and `Connection` differs
/// between the runs).
pub fn headers(origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Accept", "*/*".into()),
        ("Access-Control-Request-Method", "PUT".into()),
        (
            "Access-Control-Request-Headers",
            "content-type,x-requested-with".into(),
        ),
        ("Origin", origin.into()),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36".into(),
        ),
        ("Sec-Fetch-Mode", "cors".into()),
        ("Sec-Fetch-Site", "cross-site".into()),
        ("Sec-Fetch-Dest", "empty".into()),
        ("Referer", format!("{origin}/")),
        ("Accept-Encoding", "gzip, deflate, br, zstd".into()),
        ("Accept-Language", "en-US,en;q=0.9".into()),
    ]
}

/// The whole request head, to `host`, with a kept-alive connection.
pub fn request(origin: &str, host: &str) -> Vec<u8> {
    let mut text = format!("OPTIONS {PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n");
    for (name, value) in headers(origin) {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}
