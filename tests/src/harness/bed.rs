//! A test bed: a namespace pair with the test server running on the server
//! side; each test starts its filter on it.

use std::path::Path;

use anyhow::Result;

use crate::{
    harness::filter::{FilterHome, RunningFilter},
    harness::netns::{NetnsPair, SERVER_IF},
    harness::server::{ServerOptions, TestServer},
    require_root,
};

pub struct Bed {
    /// Declared first: the server stops before its namespaces go.
    pub server: TestServer,
    pub pair: NetnsPair,
}

impl Bed {
    /// `server_binary` is `cors-test-server` (`env!("CARGO_BIN_EXE_cors-test-server")`).
    pub fn new(server_binary: &Path) -> Result<Bed> {
        Bed::with_server_args(server_binary, &[])
    }

    /// [`Bed::new`], with extra arguments for the test server.
    pub fn with_server_args(server_binary: &Path, server_args: &[&str]) -> Result<Bed> {
        require_root()?;
        let pair = NetnsPair::create()?;
        let server = TestServer::start_with(&pair, server_binary, server_args)?;
        Ok(Bed { server, pair })
    }

    /// [`Bed::new`], with the test server started as `options` say.
    pub fn with_server_options(server_binary: &Path, options: &ServerOptions) -> Result<Bed> {
        require_root()?;
        let pair = NetnsPair::create()?;
        let server = TestServer::start_with_options(&pair, server_binary, options)?;
        Ok(Bed { server, pair })
    }

    pub fn filter(&self, home: &FilterHome, args: &[&str]) -> Result<RunningFilter> {
        RunningFilter::start(&self.pair, home, args)
    }

    /// Whether an XDP program is attached to the server interface, per
    /// `ip link`. Neither it nor Debian's bpftool shows TCX links yet: with
    /// `--attach tc`, tests judge by what the traffic shows.
    pub fn xdp_attached(&self) -> Result<bool> {
        Ok(self
            .pair
            .link_show(&self.pair.server, SERVER_IF)?
            .contains("prog/xdp"))
    }
}
