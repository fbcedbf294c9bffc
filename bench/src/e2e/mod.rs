//! Parts 2 and 3 of the benchmark, on a veth pair between two namespaces.

use anyhow::{Result, bail};

use crate::report::Part;

/// CPU time per rejected preflight: cors-filter (XDP drop) against nginx
/// answering 403.
pub fn reject_cost() -> Result<Part> {
    bail!("not written yet")
}

/// wrk against nginx through the veth pair, with and without cors-filter.
pub fn allowed_traffic() -> Result<Part> {
    bail!("not written yet")
}
