//! `cors-filter detach --iface IF | --all`: takes the filter off on
//! purpose. Stopping the daemon does not (unless it runs with
//! `--detach-on-exit`): the pinned links keep the program attached.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{
    kernel::links::{detach_pinned, link_pins},
    kernel::pins::{lock_dir, pin_exists, remove_pins},
};

pub fn detach(pin_dir: &Path, iface: Option<&str>) -> Result<()> {
    if !pin_exists(pin_dir)? {
        match iface {
            Some(iface) => bail!(
                "no filter is attached to {iface}: {} does not exist",
                pin_dir.display()
            ),
            None => {
                println!("nothing to detach: {} does not exist", pin_dir.display());
                return Ok(());
            }
        }
    }
    // A running daemon would re-adopt or keep serving what is removed under
    // it; it is stopped first.
    let _lock = lock_dir(pin_dir).with_context(|| {
        "stop `cors-filter run` first (it leaves the filter attached when it stops), then detach"
    })?;
    match iface {
        Some(iface) => {
            let pins: Vec<_> = link_pins(pin_dir)?
                .into_iter()
                .filter(|p| p.iface == iface)
                .collect();
            if pins.is_empty() {
                bail!(
                    "no filter is attached to {iface}: no link for it is pinned in {}",
                    pin_dir.display()
                );
            }
            for pin in pins {
                detach_pinned(&pin.path)?;
                println!("detached from {iface} ({})", pin.hook.as_str());
            }
        }
        None => {
            for pin in remove_pins(pin_dir)? {
                println!("detached from {} ({})", pin.iface, pin.hook.as_str());
            }
            println!("removed {}", pin_dir.display());
        }
    }
    Ok(())
}
