//! Parts 2, 3 and 4 of the benchmark, on a veth pair between two namespaces
//! the benchmark creates: both ends of every connection are there.

mod allowed;
mod cpu;
mod filter;
mod link;
mod nginx;
mod reject;
mod scaling;
mod sender;
mod wrk;

use anyhow::Result;

use crate::report::Part;

/// CPU time per rejected preflight: cors-filter (XDP drop) against nginx
/// answering 403.
pub fn reject_cost() -> Result<Part> {
    reject::run()
}

/// wrk against nginx through the veth pair, with and without cors-filter.
pub fn allowed_traffic() -> Result<Part> {
    allowed::run()
}

/// Rejections per second with 2 receive queues against 1, from the
/// receive CPU time of the busiest queue.
pub fn rejection_scaling() -> Result<Part> {
    scaling::run()
}
