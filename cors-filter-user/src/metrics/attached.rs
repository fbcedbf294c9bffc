//! What `cors_filter_attached` and `cors_filter_build_info` say: the links
//! the filter enforces on, read from the link pins at each scrape (so that
//! a link detached with `detach --iface`, or one whose interface is gone,
//! disappears from `/metrics`), and the build that serves them.

use std::path::Path;

use anyhow::Result;
use cors_filter_common::pinned::LAYOUT;

use crate::kernel::links::{HookName, ifindex, link_pins, link_state};

/// The version `cors_filter_build_info` reports: this crate's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The labels of `cors_filter_build_info`, by name.
pub fn build_info_labels() -> [(&'static str, String); 2] {
    [
        ("version", VERSION.to_owned()),
        ("layout", LAYOUT.to_string()),
    ]
}

/// A link the filter enforces on: pinned in the pin directory and, per
/// the kernel, still attached to the interface its pin names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedLink {
    pub interface: String,
    pub hook: HookName,
}

impl AttachedLink {
    /// `interface`, `hook` (`xdp` or `tc`) and `xdp_mode` (`native`, `skb`,
    /// or `none` for TC).
    pub fn labels(&self) -> [(&'static str, &str); 3] {
        let (hook, xdp_mode) = match self.hook {
            HookName::XdpNative => ("xdp", "native"),
            HookName::XdpSkb => ("xdp", "skb"),
            HookName::Tc => ("tc", "none"),
        };
        [
            ("interface", self.interface.as_str()),
            ("hook", hook),
            ("xdp_mode", xdp_mode),
        ]
    }
}

/// The links pinned in `pin_dir` that are attached to their interface
/// now. A pin whose link is defunct (its interface gone) or on another
/// interface than its name says (an interface renamed since) is left
/// out: the filter does not enforce where the pin's name says.
pub fn read(pin_dir: &Path) -> Result<Vec<AttachedLink>> {
    let mut links = Vec::new();
    for pin in link_pins(pin_dir)? {
        let state = link_state(&pin.path)?;
        let Ok(index) = ifindex(&pin.iface) else {
            continue;
        };
        if state.is_on(pin.hook, index) {
            links.push(AttachedLink {
                interface: pin.iface,
                hook: pin.hook,
            });
        }
    }
    Ok(links)
}
