//! The policy the program enforces (settings, ports, allowlist) and its
//! installation into the two generations of policy maps (see
//! `cors_filter_common::Generation`).
//!
//! Installing fills the generation the program does not read, then bumps
//! `ACTIVE` with one 4-byte store: a packet is judged by the old policy
//! whole or by the new one whole, never by a half-written one, so a reload
//! drops no allowed request. Every writer of the policy maps (`run`,
//! `reload`, `allow`) holds the state directory's allowlist lock.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    path::Path,
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData},
};
use cors_filter_common::{
    FilterConfig, Generation, PortBitmap, PortFlags,
    allow_map::AllowEntryValue,
    pinned::{ConfigEntry, name},
};

use crate::{
    allow_entry::{AllowEntry, decode_entry},
    kernel::pins::open_pinned,
};

/// What the program is to enforce.
#[derive(Debug, Clone)]
pub struct Policy {
    pub settings: FilterConfig,
    /// The ports inspected, and what is checked on each.
    pub ports: BTreeMap<u16, PortPolicy>,
    pub allow: Vec<AllowEntry>,
}

/// What the filter does on one inspected port, beyond preflights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortPolicy {
    /// Requests with unsafe methods are judged (`protect_unsafe_methods`).
    pub protect_unsafe: bool,
    /// The header a trusted proxy writes the client's address in, which
    /// denial events then name (`client_address_header`); never a
    /// verdict's input.
    pub client_header: Option<ClientHeader>,
}

/// A header a trusted proxy names the client in (its last element), as
/// the config file's `client_address_header` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientHeader {
    XForwardedFor,
    Forwarded,
}

impl ClientHeader {
    /// How the config and the logs name it.
    pub fn name(self) -> &'static str {
        match self {
            ClientHeader::XForwardedFor => "x-forwarded-for",
            ClientHeader::Forwarded => "forwarded",
        }
    }
}

impl PortPolicy {
    /// The port's bits in `PORTS_n` (see `PortFlags`). The retired
    /// `PortFlags::PASS_INCOMPLETE_UNSAFE` is never set: an oversized
    /// head is handled by `on_oversized_head`, for every port alike.
    pub fn flags(self) -> u64 {
        let mut flags = PortFlags::INSPECT;
        if self.protect_unsafe {
            flags |= PortFlags::PROTECT_UNSAFE;
        }
        flags |= match self.client_header {
            None => 0,
            Some(ClientHeader::XForwardedFor) => PortFlags::CLIENT_X_FORWARDED_FOR,
            Some(ClientHeader::Forwarded) => PortFlags::CLIENT_FORWARDED,
        };
        flags
    }
}

impl Policy {
    /// `ports [80, 8080]`, and the ports that protect unsafe methods.
    pub fn describe_ports(&self) -> String {
        let ports_where = |wanted: fn(&PortPolicy) -> bool| -> Vec<u16> {
            let ports = self.ports.iter().filter(|(_, p)| wanted(p));
            ports.map(|(port, _)| *port).collect()
        };
        let all: Vec<u16> = self.ports.keys().copied().collect();
        let protected = ports_where(|p| p.protect_unsafe);
        if protected.is_empty() {
            format!("ports {all:?}")
        } else {
            format!("ports {all:?} (unsafe methods checked on {protected:?})")
        }
    }
}

/// An `ALLOWLIST_n` map: entries by the hash of their key (see
/// `cors_filter_common::allow_map`).
pub type Allowlist = HashMap<MapData, u64, AllowEntryValue>;

/// The policy maps of one loaded or pinned program.
pub struct PolicyMaps {
    active: Array<MapData, u32>,
    config: Array<MapData, ConfigEntry>,
    ports: [Array<MapData, u64>; 2],
    allowlists: [Allowlist; 2],
}

impl PolicyMaps {
    fn from_maps(mut take: impl FnMut(&'static str) -> Result<Map>) -> Result<PolicyMaps> {
        fn array<V: aya::Pod>(map: Map, name: &str) -> Result<Array<MapData, V>> {
            Array::try_from(map).with_context(|| format!("{name} is not an array"))
        }
        let mut hash = |name| -> Result<Allowlist> {
            HashMap::try_from(take(name)?).with_context(|| format!("{name} is not a hash map"))
        };
        let allowlists = [hash(name::ALLOWLISTS[0])?, hash(name::ALLOWLISTS[1])?];
        let [ports_0, ports_1] = name::PORTS;
        Ok(PolicyMaps {
            active: array(take(name::ACTIVE)?, name::ACTIVE)?,
            config: array(take(name::CONFIG)?, name::CONFIG)?,
            ports: [
                array(take(ports_0)?, ports_0)?,
                array(take(ports_1)?, ports_1)?,
            ],
            allowlists,
        })
    }

    /// The maps of a loaded object, taken out of it (the program keeps
    /// using them; they are no longer reachable through `ebpf`).
    pub fn take(ebpf: &mut Ebpf) -> Result<PolicyMaps> {
        Self::from_maps(|name| {
            ebpf.take_map(name)
                .with_context(|| format!("the eBPF object has no map {name}"))
        })
    }

    /// The maps a running filter pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<PolicyMaps> {
        Self::from_maps(|name| {
            let data = open_pinned(pin_dir, name)?;
            Ok(if name::ALLOWLISTS.contains(&name) {
                Map::HashMap(data)
            } else {
                Map::Array(data)
            })
        })
    }

    /// Makes `ACTIVE` of maps that an upgrade made new say that
    /// `installed` policies came before: the count goes on across it.
    pub fn continue_count(&mut self, installed: u32) -> Result<()> {
        self.active
            .set(0, installed, 0)
            .context("cannot write ACTIVE")
    }

    /// Policies installed so far (the `ACTIVE` value).
    pub fn installed(&self) -> Result<u32> {
        self.active.get(&0, 0).context("cannot read ACTIVE")
    }

    /// The settings of the generation the program reads now.
    pub fn active_settings(&self) -> Result<FilterConfig> {
        let generation = Generation::of(self.installed()?);
        let entry = self
            .config
            .get(&generation, 0)
            .with_context(|| format!("cannot read CONFIG[{generation}]"))?;
        Ok(entry.settings)
    }

    /// The allowlist the program reads now.
    pub fn active_allowlist(&mut self) -> Result<&mut Allowlist> {
        let generation = Generation::of(self.installed()?) as usize;
        Ok(&mut self.allowlists[generation])
    }

    /// Entries (exact and wildcard origins) in the allowlist the program
    /// reads now: one `bpf(2)` call each.
    pub fn count_active(&mut self) -> Result<u64> {
        let mut entries = 0;
        for key in self.active_allowlist()?.keys() {
            key.context("cannot iterate the allowlist")?;
            entries += 1;
        }
        Ok(entries)
    }

    /// Adds `entry` to the allowlist the program reads now (or changes its
    /// methods, if the origin is there already), and makes the
    /// program try wildcard prefixes at its depth (a bit set by an entry
    /// removed later only costs a lookup, until the next install).
    pub fn add_to_active(&mut self, entry: &AllowEntry) -> Result<()> {
        let generation = Generation::of(self.installed()?);
        insert_entry(&mut self.allowlists[generation as usize], entry)?;
        let bit = entry.wildcard_depth_bit();
        let mut entry = self
            .config
            .get(&generation, 0)
            .with_context(|| format!("cannot read CONFIG[{generation}]"))?;
        if entry.settings.wildcard_depths & bit != bit {
            // The other fields are written back as they are: a program
            // reading the entry meanwhile sees them unchanged, and the
            // depths word old or new.
            entry.settings.wildcard_depths |= bit;
            self.config
                .set(generation, entry, 0)
                .with_context(|| format!("cannot write CONFIG[{generation}]"))?;
        }
        Ok(())
    }

    /// Removes `entry` from the allowlist the program reads now; false if
    /// it was not there (the entry under its hash, if any, is another's).
    pub fn remove_from_active(&mut self, entry: &AllowEntry) -> Result<bool> {
        let map = self.active_allowlist()?;
        let hash = entry.hash();
        match map.get(&hash, 0) {
            Ok(existing) if existing.same_key(&entry.value) => {}
            Ok(_) | Err(aya::maps::MapError::KeyNotFound) => return Ok(false),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot look up origin {}", entry.origin));
            }
        }
        match map.remove(&hash) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot remove origin {}", entry.origin)),
        }
    }

    /// Installs `policy` in the generation not in use, then switches the
    /// program to it. Returns the new `ACTIVE` value. If anything fails
    /// before the switch, the program goes on with the policy it had.
    pub fn install(&mut self, policy: &Policy) -> Result<u32> {
        let installed = self.installed()?;
        // Programs that read the spare generation's maps before the last
        // switch (or last crash of a writer) may still run; wait for them
        // before rewriting those maps. Maps on which no policy was ever
        // installed are new: no program has run with them yet.
        if installed != 0 {
            wait_for_running_programs()?;
        }
        let next = installed.wrapping_add(1);
        let spare = Generation::of(next);

        let mut words = vec![0u64; PortBitmap::WORDS as usize];
        for (port, port_policy) in &policy.ports {
            let (word, shift) = PortBitmap::slot(*port);
            words[word as usize] |= port_policy.flags() << shift;
        }
        let ports = &mut self.ports[spare as usize];
        for (index, word) in words.iter().enumerate() {
            ports
                .set(index as u32, word, 0)
                .with_context(|| format!("cannot write PORTS_{spare}"))?;
        }

        let allowlist = &mut self.allowlists[spare as usize];
        let stale = allowlist
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("cannot read ALLOWLIST_{spare}"))?;
        for key in &stale {
            allowlist
                .remove(key)
                .with_context(|| format!("cannot clear ALLOWLIST_{spare}"))?;
        }
        // The spare map is empty now: an entry can only collide with
        // another of the policy, which this finds without a lookup in the
        // map per entry.
        let mut by_hash: StdHashMap<u64, &AllowEntry> =
            StdHashMap::with_capacity(policy.allow.len());
        for entry in &policy.allow {
            let hash = entry.hash();
            if let Some(other) = by_hash.insert(hash, entry)
                && !other.value.same_key(&entry.value)
            {
                bail!(collision(entry, &other.origin, hash));
            }
            allowlist
                .insert(hash, entry.value, 0)
                .with_context(|| format!("cannot add origin {}", entry.origin))
                .with_context(|| format!("cannot fill ALLOWLIST_{spare}"))?;
        }
        let settings = FilterConfig {
            wildcard_depths: policy
                .allow
                .iter()
                .fold(0, |depths, entry| depths | entry.wildcard_depth_bit()),
            ..policy.settings
        };
        self.config
            .set(spare, ConfigEntry::new(settings), 0)
            .context("cannot write CONFIG")?;

        self.active
            .set(0, next, 0)
            .context("cannot switch ACTIVE to the new policy")?;
        Ok(next)
    }
}

/// Adds `entry` to `map` under its hash, or replaces the entry of the same
/// origin (whose methods may differ). Another entry already filed under
/// that hash (two origins whose keys hash alike, which the 64-bit hash makes
/// all but impossible) is an error naming both: the map holds one entry per
/// hash, and the program would find only one of them.
fn insert_entry(map: &mut Allowlist, entry: &AllowEntry) -> Result<()> {
    let hash = entry.hash();
    match map.get(&hash, 0) {
        Ok(existing) if !existing.same_key(&entry.value) => bail!(collision(
            entry,
            &decode_entry(&existing).unwrap_or_else(|e| format!("<unreadable entry: {e}>")),
            hash
        )),
        Ok(_) | Err(aya::maps::MapError::KeyNotFound) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot look up origin {}", entry.origin));
        }
    }
    map.insert(hash, entry.value, 0)
        .with_context(|| format!("cannot add origin {}", entry.origin))
}

fn collision(entry: &AllowEntry, other: &str, hash: u64) -> String {
    format!(
        "origin {} has the same allowlist hash ({hash:#018x}) as origin {other}; the allowlist cannot hold both",
        entry.origin
    )
}

/// `MEMBARRIER_CMD_GLOBAL` from `linux/membarrier.h`.
const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;

/// Returns once every XDP and TC program run that started before the call
/// has finished.
///
/// Both run inside an RCU read-side section, and `MEMBARRIER_CMD_GLOBAL`
/// waits for an RCU grace period (`synchronize_rcu()`), which ends only after
/// every such section that was open at the call has closed.
pub fn wait_for_running_programs() -> Result<()> {
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        // EINVAL: the kernel runs with nohz_full, where the command is
        // refused. Without the wait, a reload could rewrite maps a program
        // still reads, so it is refused rather than done unsafely.
        bail!(
            "membarrier(MEMBARRIER_CMD_GLOBAL) failed ({error}); cannot wait for running programs before rewriting the spare policy generation"
        );
    }
    Ok(())
}
