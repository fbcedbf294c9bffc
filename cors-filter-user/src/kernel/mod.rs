//! The plumbing to the kernel: the loaded program ([`filter`]), the bpf
//! links that attach it ([`links`]), the pin directory ([`pins`]) and the
//! layout of what is pinned there ([`layout`]), the policy maps
//! ([`policy`]), and running the program on a frame ([`testrun`]).

pub mod filter;
pub mod layout;
pub mod links;
pub mod pins;
pub mod policy;
pub mod testrun;
