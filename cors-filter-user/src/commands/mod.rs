//! The subcommands of `cors-filter`, one module each (see `cli`).

pub mod allow;
pub mod check;
pub mod detach;
pub mod reload;
pub mod replay;
pub mod run;
pub mod stats;
pub mod status;
