//! `cors-filter-package --binary PATH --out DIR`: builds the Debian
//! package (see the library); `cargo xtask package` runs it.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cors-filter-package",
    about = "Build cors-filter's Debian package"
)]
struct Args {
    /// The release `cors-filter` binary to package.
    #[arg(long, value_name = "PATH")]
    binary: PathBuf,
    /// Directory the `.deb` is written to.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match cors_filter_package::deb::build(&args.binary, &args.out) {
        Ok(deb) => {
            println!("{}", deb.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cors-filter-package: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
