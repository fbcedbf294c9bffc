//! `cors-filter-bench`, run by `cargo xtask bench` (as root): measures what
//! cors-filter costs, side by side with what it is compared to, in one run.
//!
//! 1. `kernel`: the program's cost per packet under `BPF_PROG_TEST_RUN`,
//!    next to bare `XDP_PASS` and `XDP_DROP` programs loaded in the same run.
//! 2. `reject`: CPU time per rejected preflight on a veth pair between two
//!    namespaces, cors-filter (XDP drop) against nginx answering 403.
//! 3. `allowed`: wrk against nginx through the veth pair, with and without
//!    cors-filter attached.
//! 4. `scaling`: rejections per second of cors-filter on a veth pair with 2
//!    receive queues (a NAPI kthread on each CPU) against 1 queue, from the
//!    receive CPU time of the busiest queue.
//!
//! Prints every table and target line, and writes them into the generated
//! block of `BENCHMARKS.md` (the rest of that file is kept as it is).

mod affinity;
mod e2e;
mod kernel;
mod markdown;
mod preflight;
mod report;

use std::{path::PathBuf, time::Instant};

use anyhow::Result;
use clap::{Parser, ValueEnum};

use crate::report::Part;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PartName {
    Kernel,
    Reject,
    Allowed,
    Scaling,
}

#[derive(Parser)]
#[command(name = "cors-filter-bench")]
struct Cli {
    /// The Markdown file whose generated block receives the figures.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Parts to run (all by default). With some left out, the file is not
    /// written: its block always holds one whole run.
    #[arg(long, value_delimiter = ',')]
    parts: Vec<PartName>,
    /// Instead of the parts: time other builds' eBPF objects (NAME=PATH,
    /// e.g. `before=target/release/build/cors-filter-user-*/out/cors-filter-ebpf`
    /// of an earlier commit) beside this build's program, on the kernel
    /// part's cases, for the history in `BENCHMARKS.md`. The objects must
    /// have this build's maps.
    #[arg(long, value_name = "NAME=PATH", conflicts_with = "parts")]
    compare: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    cors_filter_tests::require_root()?;
    if !cli.compare.is_empty() {
        let builds = cli.compare.clone();
        let part = std::thread::spawn(move || kernel::compare(&builds))
            .join()
            .map_err(|_| anyhow::anyhow!("the comparison panicked"))??;
        for section in &part.sections {
            println!("{}", section.text());
            println!("{}", section.markdown());
        }
        return Ok(());
    }
    let started = Instant::now();
    let all = [
        PartName::Kernel,
        PartName::Reject,
        PartName::Allowed,
        PartName::Scaling,
    ];
    let parts = if cli.parts.is_empty() {
        all.to_vec()
    } else {
        cli.parts.clone()
    };
    let mut results: Vec<Part> = Vec::new();
    for part in &parts {
        let at = Instant::now();
        eprintln!("cors-filter-bench: running {part:?}");
        let result = match part {
            // In a thread of its own: it pins itself to a CPU.
            PartName::Kernel => std::thread::spawn(kernel::run)
                .join()
                .map_err(|_| anyhow::anyhow!("the kernel part panicked"))??,
            PartName::Reject => e2e::reject_cost()?,
            PartName::Allowed => e2e::allowed_traffic()?,
            PartName::Scaling => e2e::rejection_scaling()?,
        };
        for section in &result.sections {
            println!("{}", section.text());
        }
        eprintln!(
            "cors-filter-bench: {part:?} took {:.0} s",
            at.elapsed().as_secs_f64()
        );
        results.push(result);
    }
    println!("== Targets");
    for target in results.iter().flat_map(|p| &p.targets) {
        println!("{}", target.line());
    }
    let elapsed = started.elapsed();
    println!("(benchmark ran {:.0} s)", elapsed.as_secs_f64());
    if parts.len() == all.len() {
        markdown::write(&cli.out, &results, elapsed)?;
        println!("written to {}", cli.out.display());
    } else {
        println!("only some parts ran: {} left as it was", cli.out.display());
    }
    Ok(())
}
