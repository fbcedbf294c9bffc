//! The namespace harness: network namespaces and their veth pairs, the test
//! server, curl, raw clients, Chromium, the proxies of the TLS bed, `cors-
//! filter run` on the server side, the metrics endpoint, captures and sockets
//! of a namespace, bounded processes, released builds, and the demo.

pub mod attempt;
pub mod bed;
pub mod browser;
pub mod client;
pub mod configmap;
pub mod demo;
pub mod filter;
pub mod metrics;
pub mod netns;
pub mod preflight_loop;
pub mod process;
pub mod proxy_bed;
pub mod raw_client;
pub mod release;
pub mod server;
pub mod sockets;
pub mod tcpdump;
