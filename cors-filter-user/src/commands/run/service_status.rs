//! What `run` tells systemd it is doing (`STATUS=`, shown by `systemctl
//! status`): the interfaces, the hook, the policy generation and the
//! number of allowed origins, read from the pinned maps, so that a reload
//! made by the CLI (`systemctl reload` runs `cors-filter reload`) shows too.

use std::path::Path;

use anyhow::Result;

use crate::kernel::{links::HookName, policy::PolicyMaps};

/// How often the daemon looks whether another process installed a policy.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub struct ServiceStatus {
    ifaces: Vec<String>,
    hook: HookName,
    policy: PolicyMaps,
    installed: u32,
    origins: u64,
}

impl ServiceStatus {
    /// The status of the filter pinned in `pin_dir`, attached to `ifaces`.
    pub fn read(ifaces: &[String], hook: HookName, pin_dir: &Path) -> Result<ServiceStatus> {
        let mut policy = PolicyMaps::open(pin_dir)?;
        let installed = policy.installed()?;
        let origins = policy.count_active()?;
        Ok(ServiceStatus {
            ifaces: ifaces.to_vec(),
            hook,
            policy,
            installed,
            origins,
        })
    }

    /// Reads the policy generation again (one `bpf(2)` call), and the
    /// allowlist when it changed. True when it changed.
    pub fn refresh(&mut self) -> Result<bool> {
        let installed = self.policy.installed()?;
        if installed == self.installed {
            return Ok(false);
        }
        self.origins = self.policy.count_active()?;
        self.installed = installed;
        Ok(true)
    }

    /// `filtering eth0, eth1 (xdp-native): policy 3, 12 allowed origin(s)`.
    pub fn line(&self) -> String {
        line(&self.ifaces, self.hook, self.installed, self.origins)
    }
}

fn line(ifaces: &[String], hook: HookName, installed: u32, origins: u64) -> String {
    format!(
        "filtering {} ({}): policy {installed}, {origins} allowed origin(s)",
        ifaces.join(", "),
        hook.as_str()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_names_interfaces_hook_policy_and_origins() {
        let ifaces = ["eth0".to_owned(), "eth1".to_owned()];
        assert_eq!(
            super::line(&ifaces, super::HookName::Tc, 3, 12),
            "filtering eth0, eth1 (tc): policy 3, 12 allowed origin(s)"
        );
    }
}
