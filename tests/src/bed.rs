//! A test bed: a namespace pair with the test server running on the server
//! side; each test starts its filter on it.

use std::path::Path;

use anyhow::Result;

use crate::{
    filter::{FilterHome, RunningFilter},
    netns::NetnsPair,
    require_root,
    server::TestServer,
};

pub struct Bed {
    /// Declared first: the server stops before its namespaces go.
    pub server: TestServer,
    pub pair: NetnsPair,
}

impl Bed {
    /// `server_binary` is `cors-test-server` (`env!("CARGO_BIN_EXE_cors-test-server")`).
    pub fn new(server_binary: &Path) -> Result<Bed> {
        require_root()?;
        let pair = NetnsPair::create()?;
        let server = TestServer::start(&pair, server_binary)?;
        Ok(Bed { server, pair })
    }

    pub fn filter(&self, home: &FilterHome, args: &[&str]) -> Result<RunningFilter> {
        RunningFilter::start(&self.pair, home, args)
    }
}
