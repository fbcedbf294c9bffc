//! Frames built byte by byte and run through the program, never sent: the
//! frame builder, capture files, `replay` on them, checks of the resets the
//! program sends back, and the bare programs that are the benchmark's floor.

pub mod bare_xdp;
pub mod packet;
pub mod pcap;
pub mod replay;
pub mod reset;
