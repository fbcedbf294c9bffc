//! Which layout the pins in a pin directory have (see
//! `cors_filter_common::pinned`), and taking over the pins of an older
//! layout in place: an upgrade with no unfiltered moment.
//!
//! An upgrade makes new the maps whose shape or meaning changed (the
//! policy filled from the config; the counters from zero), then switches
//! every pinned link to the new program, one atomic `BPF_LINK_UPDATE`
//! each: until its switch a link runs the old program with the old maps,
//! from it the new one with the new maps. Only then are the old counters'
//! final totals carried beside the new ones, the new maps pinned under the
//! old names and the layout record written.
//! Maps of the same shape and meaning (connection state, pending denial
//! events) are kept: the new program goes on where the old one was.
//!
//! A run killed half-way leaves the record of the old layout (layout 1 has
//! none), so the next run upgrades again from the pins as they are.

use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use cors_filter_common::{
    Counter,
    pinned::{LAYOUT, LayoutRecord, name},
};

use crate::{
    config::TableSizes,
    exit::{self, Kind},
    kernel::pins::{
        MapSpec, STAGING_SUFFIX, Shape, array, check_pinned_maps, per_cpu_counters, pin_exists,
        pin_path, pinned_maps, pinned_shape, staging_path,
    },
    kernel::policy::wait_for_running_programs,
};

/// This build's version, as the layout record names it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The maps of layout 1 (cors-filter 0.1.0) whose shape differs from this
/// layout's, as 0.1.0 made them: frozen, they are what hosts running it
/// have pinned. Its other maps have this layout's shapes.
const LAYOUT_1_CHANGED: [MapSpec; 2] = [
    // 24-byte `FilterConfig` entries.
    array(name::CONFIG, 24, 2),
    // 36 counters, no room to grow.
    per_cpu_counters(36),
];

/// What a run does with a map of an older layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// Same shape and meaning: the new program uses the pinned map.
    Keep,
    /// A new map, filled by the policy install. All the policy maps go
    /// together: the old program reads its own until its link switches.
    Refill,
    /// New counters, from zero; the old ones' final totals are carried
    /// beside them (see [`CounterPlan`]; a counter's number never changes
    /// meaning, so they add up index by index).
    Carried,
}

impl Carry {
    /// What an upgrade from `layout` does with map `map` of this layout.
    pub fn from_layout(layout: u32, map: &str) -> Result<Carry> {
        if layout != 1 {
            bail!("no upgrade from layout {layout} is known");
        }
        Ok(match map {
            name::CONNS | name::OPEN_HEADS | name::PROXY_CLIENTS | name::DENIALS => Carry::Keep,
            name::COUNTERS => Carry::Carried,
            _ => Carry::Refill,
        })
    }
}

/// The name of the map that carries layout `layout`'s counters.
pub fn carried_name(layout: u32) -> String {
    format!("{}{layout}", name::COUNTERS_CARRIED_FROM)
}

/// The shape of a carried-counters map.
fn carried_shape() -> Shape {
    array("", size_of::<u64>(), Counter::SLOTS).shape
}

/// The carried-counters maps pinned in `pin_dir`, checked: their names.
fn carried_maps(pin_dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(pin_dir)
        .with_context(|| format!("cannot read pin directory {}", pin_dir.display()))?
    {
        let file = entry
            .with_context(|| format!("cannot read {}", pin_dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !file.starts_with(name::COUNTERS_CARRIED_FROM) || file.ends_with(STAGING_SUFFIX) {
            continue;
        }
        let path = pin_path(pin_dir, &file);
        let shape = pinned_shape(&path)?;
        if shape != Some(carried_shape()) {
            bail!(
                "{} is not carried counters ({}); remove the filter with `cors-filter --pin-dir {} detach --all` (the host is unfiltered until this one starts)",
                path.display(),
                shape.map_or("gone".to_owned(), |s| s.to_string()),
                pin_dir.display()
            );
        }
        found.push(file);
    }
    found.sort();
    Ok(found)
}

/// What the pin directory holds.
pub enum Pins {
    /// Nothing: a first start.
    Empty,
    /// Pins of this layout: adopted as they are.
    Current,
    /// Pins of an older layout, to be upgraded in place.
    Older(Upgrade),
}

/// The error for pins of a newer layout than this version reads: its
/// message, and exit code 7 ([`Kind::NewerLayout`]).
fn unreadable(pin_dir: &Path, record: &LayoutRecord) -> anyhow::Error {
    let writer = record.writer();
    let error = anyhow::anyhow!(
        "the pins in {dir} are of layout {layout}, written by cors-filter {writer}; this is cors-filter {VERSION}, which reads layout {LAYOUT} and older, so it cannot take them over. The filter pinned there is left as it is: attached, in the mode it was given. To run {VERSION}: stop the daemon, run `cors-filter --pin-dir {dir} detach --all` with cors-filter {writer} (the host is unfiltered until {VERSION} has started), then start {VERSION}; or keep cors-filter {writer} or later",
        dir = pin_dir.display(),
        layout = record.layout,
    );
    exit::mark(error, Kind::NewerLayout)
}

/// The layout record pinned in `pin_dir`, if there is one.
pub fn read_record(pin_dir: &Path) -> Result<Option<LayoutRecord>> {
    let path = pin_path(pin_dir, name::LAYOUT);
    let Some(shape) = pinned_shape(&path)? else {
        return Ok(None);
    };
    if shape != record_spec().shape {
        bail!(
            "{} is {shape}, not a cors-filter layout record; remove the filter with `cors-filter --pin-dir {} detach --all` (the host is unfiltered until this one starts)",
            path.display(),
            pin_dir.display()
        );
    }
    let record: Array<MapData, LayoutRecord> = open_array(&path)?;
    record
        .get(&0, 0)
        .map(Some)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The `LAYOUT` map: one record, whose size never changes.
fn record_spec() -> MapSpec {
    array(name::LAYOUT, size_of::<LayoutRecord>(), 1)
}

/// Pins the record of this layout in `pin_dir` (replacing any): made
/// under a staging name and renamed, so the record is there whole or not.
pub fn write_record(pin_dir: &Path) -> Result<()> {
    let spec = record_spec().shape;
    let object = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        spec.key_size,
        spec.value_size,
        spec.max_entries,
        0,
    );
    let data = MapData::create(object, name::LAYOUT, None).context("cannot make the LAYOUT map")?;
    let mut record: Array<MapData, LayoutRecord> =
        Array::try_from(Map::Array(data)).context("the LAYOUT map is not an array")?;
    record
        .set(0, LayoutRecord::new(LAYOUT, VERSION), 0)
        .context("cannot write the layout record")?;
    let staged = staging_path(pin_dir, name::LAYOUT);
    remove_if_present(&staged)?;
    record
        .pin(&staged)
        .with_context(|| format!("cannot pin {}", staged.display()))?;
    let path = pin_path(pin_dir, name::LAYOUT);
    std::fs::rename(&staged, &path)
        .with_context(|| format!("cannot rename {} to {}", staged.display(), path.display()))
}

/// The array map pinned at `path`, of `V` values.
fn open_array<V: aya::Pod>(path: &Path) -> Result<Array<MapData, V>> {
    let map = MapData::from_pin(path)
        .with_context(|| format!("cannot open pinned map {}", path.display()))?;
    Array::try_from(Map::Array(map))
        .with_context(|| format!("{} is not the expected array", path.display()))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// What `pin_dir` holds, its maps checked against this layout (the
/// connection maps against the sizes `tables` gives them). Refuses pins of
/// a newer layout, and pins of no known layout.
pub fn inspect(pin_dir: &Path, tables: TableSizes) -> Result<Pins> {
    let maps = pinned_maps(tables);
    match read_record(pin_dir)? {
        Some(record) if record.layout == LAYOUT => {
            check_pinned_maps(pin_dir, &maps, tables, |_| None)?;
            carried_maps(pin_dir)?;
            Ok(Pins::Current)
        }
        Some(record) if record.layout > LAYOUT => Err(unreadable(pin_dir, &record)),
        Some(record) => bail!(
            "{} says layout {}, which no cors-filter writes (layout 1 has no record); remove the filter with `cors-filter --pin-dir {} detach --all` (the host is unfiltered until this one starts)",
            pin_path(pin_dir, name::LAYOUT).display(),
            record.layout,
            pin_dir.display()
        ),
        None => {
            // Layout 1, or maps of this layout whose upgrade was cut short
            // before the record: each map may have either shape.
            let carried = carried_maps(pin_dir)?;
            if !check_pinned_maps(pin_dir, &maps, tables, layout_1_shape)? {
                if let Some(stray) = carried.first() {
                    bail!(
                        "{} is pinned with no filter beside it; remove it (`cors-filter --pin-dir {} detach --all`)",
                        pin_path(pin_dir, stray).display(),
                        pin_dir.display()
                    );
                }
                return Ok(Pins::Empty);
            }
            Ok(Pins::Older(Upgrade::from_layout_1(pin_dir, &maps)?))
        }
    }
}

/// Refuses pins of a newer layout than this build reads (exit code 7),
/// and only those: for a command that checks other things first.
pub fn refuse_newer(pin_dir: &Path) -> Result<()> {
    match read_record(pin_dir)? {
        Some(record) if record.layout > LAYOUT => Err(unreadable(pin_dir, &record)),
        _ => Ok(()),
    }
}

/// Refuses the pins in `pin_dir` unless they are of this layout: for the
/// commands that read or edit a running filter's maps.
pub fn require_current(pin_dir: &Path) -> Result<()> {
    match read_record(pin_dir)? {
        Some(record) if record.layout == LAYOUT => Ok(()),
        Some(record) if record.layout > LAYOUT => Err(unreadable(pin_dir, &record)),
        Some(record) => bail!(
            "{} says layout {}, which no cors-filter writes",
            pin_path(pin_dir, name::LAYOUT).display(),
            record.layout
        ),
        None => bail!(
            "the pins in {} are of layout 1, left by cors-filter 0.1.0 or by an upgrade that did not finish; this is cors-filter {VERSION} (layout {LAYOUT}), which reads them once `cors-filter run` of {VERSION} has upgraded them in place: start it (after stopping a 0.1.0 daemon, if one runs)",
            pin_dir.display()
        ),
    }
}

/// An upgrade in place from an older layout (see the module's text).
pub struct Upgrade {
    /// The layout upgraded from.
    pub from: u32,
    /// The maps made new, pinned under [`staging_path`] until [`Upgrade::finish`].
    staged: Vec<&'static str>,
    /// What becomes of the old counters.
    counters: CounterPlan,
}

/// The old counters' values are not copied into the new map, which the
/// new program counts in from the switch on, but carried in a map of
/// their own (see [`carried_name`], which readers add): written once every
/// link runs the new program, when the old values are final. No write
/// races the program's counting, so no count is lost. What a run finds
/// says how far an interrupted one got: it takes over from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CounterPlan {
    /// New counters, from zero; the old ones carried at the end.
    Fresh,
    /// The new counters of an interrupted upgrade (`COUNTERS_NEXT`), in
    /// which the links it switched have counted since: taken over; the
    /// old ones carried at the end (again: the same totals).
    Resume,
    /// An interrupted upgrade carried the old counters and gave the new
    /// ones their name: both kept.
    Done,
}

impl Upgrade {
    fn from_layout_1(pin_dir: &Path, maps: &[MapSpec]) -> Result<Upgrade> {
        let from = 1;
        let current = maps
            .iter()
            .find(|spec| spec.name == name::COUNTERS)
            .map(|spec| spec.shape);
        let staged_counters = staging_path(pin_dir, name::COUNTERS);
        let counters_path = pin_path(pin_dir, name::COUNTERS);
        let carried = pin_exists(&pin_path(pin_dir, &carried_name(from)))?;
        let counters = match (pinned_shape(&staged_counters)?, carried) {
            (Some(shape), _) if Some(shape) == current => CounterPlan::Resume,
            (Some(shape), _) => bail!(
                "{} is {shape}, not the counters an upgrade stages; remove the filter with `cors-filter --pin-dir {} detach --all` (the host is unfiltered until this one starts)",
                staged_counters.display(),
                pin_dir.display()
            ),
            (None, true) => CounterPlan::Done,
            (None, false) => CounterPlan::Fresh,
        };
        // The counters to carry, or carried, must be there: refused now
        // rather than once the links have switched.
        let wanted = match counters {
            CounterPlan::Done => current,
            _ => layout_1_shape(name::COUNTERS),
        };
        if pinned_shape(&counters_path)? != wanted {
            bail!(
                "{} is missing or not of the shape an upgrade from layout {from} expects; remove the filter with `cors-filter --pin-dir {} detach --all` (the host is unfiltered until this one starts)",
                counters_path.display(),
                pin_dir.display()
            );
        }
        // What else an interrupted upgrade staged is made again.
        for entry in std::fs::read_dir(pin_dir)
            .with_context(|| format!("cannot read pin directory {}", pin_dir.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot read {}", pin_dir.display()))?
                .path();
            let kept = counters == CounterPlan::Resume && path == staged_counters;
            if path.to_string_lossy().ends_with(STAGING_SUFFIX) && !kept {
                remove_if_present(&path)?;
            }
        }
        let mut staged = Vec::new();
        for spec in maps {
            let carry = Carry::from_layout(from, spec.name)?;
            let done = carry == Carry::Carried && counters == CounterPlan::Done;
            if carry != Carry::Keep && !done {
                staged.push(spec.name);
            }
        }
        Ok(Upgrade {
            from,
            staged,
            counters,
        })
    }

    /// Where the program's maps are pinned for this run: the kept ones at
    /// their pins, the new ones at staging pins.
    pub fn pin_path(&self, pin_dir: &Path, map: &str) -> std::path::PathBuf {
        if self.staged.contains(&map) {
            staging_path(pin_dir, map)
        } else {
            pin_path(pin_dir, map)
        }
    }

    /// Policies the old maps say were installed (their `ACTIVE`), which the
    /// new ones go on counting from.
    pub fn policies_installed(&self, pin_dir: &Path) -> Result<u32> {
        let path = pin_path(pin_dir, name::ACTIVE);
        if !pin_exists(&path)? {
            return Ok(0);
        }
        let active: Array<MapData, u32> = open_array(&path)?;
        active
            .get(&0, 0)
            .with_context(|| format!("cannot read {}", path.display()))
    }

    /// Once every pinned link runs the new program: carries the old
    /// counters (see [`CounterPlan`]), pins the new maps under their names,
    /// and writes this layout's record.
    pub fn finish(self, pin_dir: &Path) -> Result<()> {
        failpoint("upgrade-switched");
        if self.counters != CounterPlan::Done {
            // Programs that started before the last switch may still be
            // counting in the old map.
            wait_for_running_programs().context(
                "cannot wait for the old program's last runs before reading its counters",
            )?;
            carry_counters(pin_dir, self.from)?;
            failpoint("upgrade-carried");
        }
        // The counters last: once they have their name, the carried
        // values beside them are whole.
        let (counters, others): (Vec<_>, Vec<_>) =
            self.staged.iter().partition(|map| **map == name::COUNTERS);
        for map in others.into_iter().chain(counters) {
            let (staged, path) = (staging_path(pin_dir, map), pin_path(pin_dir, map));
            std::fs::rename(&staged, &path).with_context(|| {
                format!("cannot rename {} to {}", staged.display(), path.display())
            })?;
            failpoint("upgrade-renamed");
        }
        failpoint("upgrade-renamed-all");
        write_record(pin_dir)
    }
}

/// Pins the final totals of layout `from`'s counters (still pinned as
/// `COUNTERS`) as [`carried_name`]`(from)`, replacing what an interrupted
/// upgrade wrote there: the same totals, since they no longer move.
fn carry_counters(pin_dir: &Path, from: u32) -> Result<()> {
    let path = pin_path(pin_dir, name::COUNTERS);
    let map = MapData::from_pin(&path)
        .with_context(|| format!("cannot open pinned map {}", path.display()))?;
    let old: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(map))
        .with_context(|| format!("{} is not a per-CPU array of counters", path.display()))?;
    let carried_map = carried_name(from);
    let mut carried = Array::<MapData, u64>::create(Counter::SLOTS, 0)
        .with_context(|| format!("cannot make the {carried_map} map"))?;
    for index in 0..old.len().min(Counter::SLOTS) {
        let values = old
            .get(&index, 0)
            .with_context(|| format!("cannot read counter {index} of {}", path.display()))?;
        let sum = values.iter().copied().fold(0u64, u64::wrapping_add);
        carried
            .set(index, sum, 0)
            .with_context(|| format!("cannot write carried counter {index}"))?;
    }
    let (staged, path) = (
        staging_path(pin_dir, &carried_map),
        pin_path(pin_dir, &carried_map),
    );
    remove_if_present(&staged)?;
    carried
        .pin(&staged)
        .with_context(|| format!("cannot pin {}", staged.display()))?;
    std::fs::rename(&staged, &path)
        .with_context(|| format!("cannot rename {} to {}", staged.display(), path.display()))
}

/// Adds to `values` (the counters of `pin_dir`'s `COUNTERS`, summed over
/// CPUs) what upgrades carried from the counters before them, if any, and
/// derives `Packets` and `Requests` again.
pub fn add_carried(pin_dir: &Path, values: &mut [u64; Counter::COUNT as usize]) -> Result<()> {
    let maps = carried_maps(pin_dir)?;
    for map in &maps {
        let path = pin_path(pin_dir, map);
        let carried: Array<MapData, u64> = open_array(&path)?;
        for counter in Counter::ALL {
            let value = carried
                .get(&counter.index(), 0)
                .with_context(|| format!("cannot read {} of {}", counter.name(), path.display()))?;
            let slot = &mut values[counter.index() as usize];
            *slot = slot.wrapping_add(value);
        }
    }
    if !maps.is_empty() {
        Counter::derive(values);
    }
    Ok(())
}

/// The environment variable that names a [`failpoint`].
pub const FAILPOINT_VAR: &str = "CORS_FILTER_FAILPOINT";

/// Aborts the process here if `$CORS_FILTER_FAILPOINT` is `name`: for the
/// tests that kill an upgrade half-way, at the points where a crash leaves
/// the most to recover.
pub fn failpoint(name: &str) {
    if std::env::var_os(FAILPOINT_VAR).is_some_and(|value| value == name) {
        log::error!("{FAILPOINT_VAR}={name}: aborting");
        std::process::abort();
    }
}

/// The shape of `map` in layout 1, where it differs from this layout's.
fn layout_1_shape(map: &str) -> Option<Shape> {
    LAYOUT_1_CHANGED
        .iter()
        .find(|spec| spec.name == map)
        .map(|spec| spec.shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_has_a_carry_rule_and_the_changed_ones_are_made_new() {
        for spec in pinned_maps(TableSizes::default()) {
            let carry = Carry::from_layout(1, spec.name).unwrap();
            let changed = LAYOUT_1_CHANGED.iter().any(|old| old.name == spec.name);
            // A map whose shape changed cannot be kept.
            assert!(!(changed && carry == Carry::Keep), "{}", spec.name);
        }
        // The policy maps go together.
        for map in [name::ACTIVE, name::CONFIG]
            .into_iter()
            .chain(name::PORTS)
            .chain(name::ALLOWLISTS)
        {
            assert_eq!(Carry::from_layout(1, map).unwrap(), Carry::Refill, "{map}");
        }
    }

    #[test]
    fn the_newer_layout_message_names_both_versions_and_what_to_do() {
        let record = LayoutRecord::new(LAYOUT + 1, "9.1.0");
        let error = unreadable(Path::new("/sys/fs/bpf/cors-filter"), &record);
        assert_eq!(exit::classify(&error), Kind::NewerLayout);
        let text = error.to_string();
        for part in [
            &format!("layout {}", LAYOUT + 1),
            "cors-filter 9.1.0",
            &format!("cors-filter {VERSION}"),
            "detach --all",
            "left as it is: attached",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }
}
