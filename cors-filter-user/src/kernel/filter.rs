//! The loaded eBPF program: its maps pinned (or adopted from the pins of a
//! filter that ran before) and its links pinned. Dropping a `Filter` leaves
//! the program attached: the pinned links keep it so.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramInfo, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use aya_log::EbpfLogger;
use cors_filter_common::{Counter, pinned::name};

use crate::{
    config::TableSizes,
    exit::{Classify as _, Kind},
    kernel::layout::Upgrade,
    kernel::links::{
        HookName, LinkPin, detach_pinned, ifindex, link_pin_path, link_pins, link_state,
    },
    kernel::pins::{pin_path, pinned_maps},
    kernel::policy::PolicyMaps,
    kernel::testrun::{self, TestRun},
    metrics::sum_counters,
};

/// The eBPF object, built by this crate's build script.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cors-filter-ebpf"));
const XDP_PROGRAM: &str = "cors_filter";
const TC_PROGRAM: &str = "cors_filter_tc";

/// Where the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP, in the driver (`Driver`) or generic (`Skb`) mode.
    Xdp(XdpMode),
    /// TC ingress (a TCX link on kernels from 6.6).
    Tc,
}

impl Hook {
    pub fn name(self) -> HookName {
        match self {
            Hook::Xdp(XdpMode::Skb) => HookName::XdpSkb,
            Hook::Xdp(_) => HookName::XdpNative,
            Hook::Tc => HookName::Tc,
        }
    }
}

/// How `attach` put the program on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Nothing was attached there: a new link, pinned.
    New,
    /// A link pinned by an earlier daemon now runs this program; the switch
    /// is atomic, the interface was never without a filter.
    Adopted,
    /// A link on another hook (XDP / TC) was there: the new one was
    /// attached first, then the old one detached.
    Moved(HookName),
}

/// Where a loaded filter's maps are pinned.
pub struct MapPins<'a> {
    pub dir: &'a Path,
    /// An upgrade in progress, which pins the maps it makes new elsewhere.
    pub upgrade: Option<&'a Upgrade>,
}

impl MapPins<'_> {
    fn path(&self, map: &str) -> PathBuf {
        match self.upgrade {
            Some(upgrade) => upgrade.pin_path(self.dir, map),
            None => pin_path(self.dir, map),
        }
    }
}

/// A survey of one interface's link pins (see [`Filter::survey`]).
#[derive(Debug, Default)]
pub struct Survey {
    /// The link of this run's hook, to switch to the new program.
    pub adopt: Option<LinkPin>,
    /// Links of the other hook, to detach once this run's is in place.
    pub others: Vec<LinkPin>,
    /// Links whose interface is gone, to remove.
    pub gone: Vec<LinkPin>,
}

pub struct Filter {
    ebpf: Ebpf,
    hook: Hook,
    /// Where the maps and links are pinned; `None` for a program that is
    /// only test-run.
    pin_dir: Option<PathBuf>,
    /// Whether maps were taken out of the object (and their descriptors
    /// closed with them): no program may be loaded after.
    maps_taken: bool,
}

/// Loads (verifies) the program for `hook`'s kind into the kernel unless
/// it is loaded already; what the kernel says of it.
fn load_program(
    ebpf: &mut Ebpf,
    hook: HookName,
) -> Result<Result<ProgramInfo, aya::programs::ProgramError>> {
    if hook.is_xdp() {
        let program: &mut Xdp = program_mut(ebpf, XDP_PROGRAM)?;
        if program.fd().is_err() {
            program
                .load()
                .context("the kernel rejected the XDP program")
                .kind(Kind::KernelRefused)?;
        }
        Ok(program.info())
    } else {
        let program: &mut SchedClassifier = program_mut(ebpf, TC_PROGRAM)?;
        if program.fd().is_err() {
            program
                .load()
                .context("the kernel rejected the TC program")
                .kind(Kind::KernelRefused)?;
        }
        Ok(program.info())
    }
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .with_context(|| format!("the eBPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("program {name} is not of the expected type"))
}

impl Filter {
    /// Loads the object into the kernel (the program for `hook` verified,
    /// nothing attached) and takes its log ring buffer. With `pins`, the
    /// shared maps are the ones pinned there if a filter ran before (checked
    /// to have this build's shapes), else new ones pinned there; an
    /// upgrade pins the maps it makes new under staging names. The
    /// connection maps get the sizes `tables` says (a pinned one keeps
    /// its own: `check_pinned_maps` refuses another size beforehand).
    pub fn load(
        hook: Hook,
        pins: Option<MapPins>,
        tables: TableSizes,
    ) -> Result<(Filter, EbpfLogger<&'static dyn log::Log>)> {
        Filter::load_object(EBPF_OBJECT, hook, pins, tables)
    }

    /// As [`Filter::load`], with another build's eBPF object: the benchmark
    /// times earlier builds of the program beside this one. The object
    /// must have this build's maps and programs.
    pub fn load_object(
        object: &[u8],
        hook: Hook,
        pins: Option<MapPins>,
        tables: TableSizes,
    ) -> Result<(Filter, EbpfLogger<&'static dyn log::Log>)> {
        let mut loader = EbpfLoader::new();
        for (map, _, size) in tables.maps() {
            loader.map_max_entries(map, size);
        }
        let paths: Vec<(&str, PathBuf)> = match &pins {
            Some(pins) => pinned_maps(tables)
                .iter()
                .map(|spec| (spec.name, pins.path(spec.name)))
                .collect(),
            None => Vec::new(),
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .context("cannot load the eBPF object")
            .kind(Kind::KernelRefused)?;
        let logger = EbpfLogger::init(&mut ebpf).context("cannot set up eBPF logging")?;
        let info = load_program(&mut ebpf, hook.name())?;
        match info.map(|i| i.verified_instruction_count()) {
            Ok(Some(count)) => {
                log::info!("program verified: {count} instructions processed by the verifier")
            }
            Ok(None) => log::info!("program verified"),
            Err(e) => log::warn!("program verified, but its info is unreadable: {e}"),
        }
        Ok((
            Filter {
                ebpf,
                hook,
                pin_dir: pins.map(|pins| pins.dir.to_owned()),
                maps_taken: false,
            },
            logger,
        ))
    }

    /// The policy maps of this program, taken out of the object.
    pub fn take_policy_maps(&mut self) -> Result<PolicyMaps> {
        self.maps_taken = true;
        PolicyMaps::take(&mut self.ebpf)
    }

    /// Runs the loaded XDP program on `frame`, `repeat` times, with
    /// `BPF_PROG_TEST_RUN` (see [`testrun`](crate::kernel::testrun)).
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<TestRun> {
        let program: &mut Xdp = program_mut(&mut self.ebpf, XDP_PROGRAM)?;
        testrun::test_run(&*program, frame, repeat)
    }

    /// A handle of its own on the loaded XDP program, e.g. for timing it
    /// with [`testrun::test_run`] without holding the `Filter` borrowed.
    pub fn xdp_program(&mut self) -> Result<Xdp> {
        let program: &mut Xdp = program_mut(&mut self.ebpf, XDP_PROGRAM)?;
        let info = program
            .info()
            .with_context(|| format!("program {XDP_PROGRAM} is not loaded"))?;
        let attach = aya_obj::programs::XdpAttachType::Interface;
        Xdp::from_program_info(info, XDP_PROGRAM.into(), attach)
            .with_context(|| format!("cannot get a handle on program {XDP_PROGRAM}"))
    }

    /// The instructions the verifier processed for the program of `hook`'s
    /// kind, which is loaded if it was not (so only before maps are taken).
    pub fn verified_instructions(&mut self, hook: HookName) -> Result<Option<u32>> {
        let info = load_program(&mut self.ebpf, hook)?
            .with_context(|| format!("the {hook:?} program's info is unreadable"))?;
        Ok(info.verified_instruction_count())
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize]> {
        let map = self
            .ebpf
            .map(name::COUNTERS)
            .context("the eBPF object has no map COUNTERS")?;
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).context("COUNTERS is not the expected per-CPU array")?;
        sum_counters(&counters)
    }

    /// Loads (and so verifies) the program for `hook`'s kind too, besides
    /// the one `load` did: for an upgrade, which switches every link,
    /// whatever its hook. Only before the maps are taken out of the
    /// object: a program gets its maps' descriptors when it loads.
    pub fn load_program_for(&mut self, hook: HookName) -> Result<()> {
        if self.maps_taken {
            bail!(
                "the program for {} must be loaded before the maps are taken",
                hook.as_str()
            );
        }
        load_program(&mut self.ebpf, hook).map(drop)
    }

    /// Switches the link pinned at `pin` to this object's program for
    /// the link's hook (loaded by `load` or [`Filter::load_program_for`]):
    /// for an upgrade, which leaves no link on the old program.
    pub fn switch_link(&mut self, pin: &LinkPin) -> Result<()> {
        let link: FdLink = PinnedLink::from_pin(&pin.path)
            .with_context(|| format!("cannot open pinned link {}", pin.path.display()))?
            .into();
        // The mode is the link's own; BPF_LINK_UPDATE keeps it.
        let hook = if pin.hook.is_xdp() {
            Hook::Xdp(XdpMode::Driver)
        } else {
            Hook::Tc
        };
        self.replace_program(link, hook, &pin.iface)
            .with_context(|| format!("cannot switch {} to the new program", pin.path.display()))
    }

    /// What `iface`'s link pins hold, checked: the link of this run's hook
    /// to adopt, those of the other hook (XDP / TC) to detach once this
    /// one runs, and those whose interface is gone. Refuses a pin that is
    /// not the link its name says, and a change of XDP mode. Acts on
    /// nothing, so that an upgrade can check every interface before its
    /// first switch.
    pub fn survey(&self, iface: &str) -> Result<Survey> {
        let pin_dir = self.pin_dir()?;
        let index = ifindex(iface)?;
        let wanted = self.hook.name();
        let mut survey = Survey::default();
        for pin in link_pins(pin_dir)?.into_iter().filter(|p| p.iface == iface) {
            let state = link_state(&pin.path)?;
            if state.ifindex == 0 {
                // Defunct: its interface was deleted (a new one may have
                // its name).
                survey.gone.push(pin);
            } else if state.ifindex != index {
                bail!(
                    "{} is attached to the interface of index {}, not to {iface} (index {index}): was the interface renamed? Detach it with `cors-filter --pin-dir {} detach --iface {iface}` (that interface is then unfiltered), or give it its name again",
                    pin.path.display(),
                    state.ifindex,
                    pin_dir.display()
                );
            } else if !state.is_on(pin.hook, index) {
                bail!(
                    "{} is a bpf link of another kind than its name says ({}); remove it with `cors-filter --pin-dir {} detach --iface {iface}`",
                    pin.path.display(),
                    pin.hook.as_str(),
                    pin_dir.display()
                );
            } else if pin.hook == wanted {
                survey.adopt = Some(pin);
            } else if pin.hook.is_xdp() && wanted.is_xdp() {
                bail!(
                    "interface {iface} has the filter attached in {} mode ({}); to change the XDP mode, detach it first with `cors-filter --pin-dir {} detach --iface {iface}`",
                    pin.hook.as_str(),
                    pin.path.display(),
                    pin_dir.display()
                );
            } else {
                survey.others.push(pin);
            }
        }
        Ok(survey)
    }

    fn pin_dir(&self) -> Result<&Path> {
        self.pin_dir
            .as_deref()
            .context("a filter without a pin directory cannot be attached")
    }

    /// Puts the program on `iface` through a pinned link.
    ///
    /// If a link of this hook pinned by an earlier daemon is on the
    /// interface, it is switched to this program (atomic: no packet goes
    /// unfiltered); otherwise a new one is attached. Then a link on the
    /// other kind of hook (XDP / TC) is detached: a move, or what a move
    /// cut short left. A link left by an interface of the same name that
    /// no longer exists is removed.
    pub fn attach(&mut self, iface: &str) -> Result<Attached> {
        let survey = self.survey(iface)?;
        let pin_dir = self.pin_dir()?.to_owned();
        for gone in &survey.gone {
            log::warn!(
                "removing {}: its interface is gone (an interface {iface} was made again since)",
                gone.path.display()
            );
            detach_pinned(&gone.path)?;
        }
        let mut attached = match &survey.adopt {
            Some(pin) => {
                let link: FdLink = PinnedLink::from_pin(&pin.path)
                    .with_context(|| format!("cannot open pinned link {}", pin.path.display()))?
                    .into();
                self.replace_program(link, self.hook, iface)
                    .with_context(|| {
                        format!("cannot switch {} to the new program", pin.path.display())
                    })?;
                Attached::Adopted
            }
            None => {
                let link_path = link_pin_path(&pin_dir, iface, self.hook.name());
                let link = self.attach_new(iface)?;
                link.pin(&link_path).with_context(|| {
                    format!("cannot pin the link on {iface} at {}", link_path.display())
                })?;
                Attached::New
            }
        };
        for old in survey.others {
            detach_pinned(&old.path)?;
            attached = Attached::Moved(old.hook);
        }
        Ok(attached)
    }

    /// Takes the `DENIALS` ring buffer out of the object, for the daemon
    /// to read. It stays pinned (maps are pinned when the object loads), so
    /// events written while no daemon reads wait for the next one.
    pub fn take_denials(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(name::DENIALS)
            .context("the eBPF object has no map DENIALS")?;
        RingBuf::try_from(map).context("DENIALS is not the expected ring buffer")
    }

    /// Attaches to `iface` and hands back the link, which the program no
    /// longer owns (so that dropping the program does not detach it).
    fn attach_new(&mut self, iface: &str) -> Result<FdLink> {
        let link = match self.hook {
            Hook::Xdp(mode) => {
                let program: &mut Xdp = program_mut(&mut self.ebpf, XDP_PROGRAM)?;
                let id = program
                    .attach(iface, mode)
                    .with_context(|| {
                        format!("cannot attach XDP ({mode:?} mode) to interface {iface}")
                    })
                    .kind(Kind::KernelRefused)?;
                FdLink::try_from(program.take_link(id)?)
            }
            Hook::Tc => {
                let program: &mut SchedClassifier = program_mut(&mut self.ebpf, TC_PROGRAM)?;
                let id = program
                    .attach(iface, TcAttachType::Ingress)
                    .with_context(|| format!("cannot attach TC ingress to interface {iface}"))
                    .kind(Kind::KernelRefused)?;
                FdLink::try_from(program.take_link(id)?)
            }
        };
        link.with_context(|| {
            format!("the kernel attached to {iface} without a bpf link, which cannot be pinned (a kernel before 5.9 for XDP, 6.6 for TC)")
        })
    }

    /// Makes the pinned `link` run this object's program for `hook`
    /// instead of the one it runs; that program must be loaded.
    fn replace_program(&mut self, link: FdLink, hook: Hook, iface: &str) -> Result<()> {
        match hook {
            Hook::Xdp(_) => {
                let link = XdpLink::try_from(link).context("the pinned link is not an XDP link")?;
                let program: &mut Xdp = program_mut(&mut self.ebpf, XDP_PROGRAM)?;
                let id = program.attach_to_link(link)?;
                // Not owned by the program: dropping it closes the
                // descriptor only; the pin keeps the link.
                drop(FdLink::try_from(program.take_link(id)?));
            }
            Hook::Tc => {
                let link = SchedClassifierLink::try_from(link)
                    .context("the pinned link is not a TCX link")?;
                let program: &mut SchedClassifier = program_mut(&mut self.ebpf, TC_PROGRAM)?;
                let id = program.attach_to_link(link)?;
                drop(FdLink::try_from(program.take_link(id)?));
            }
        }
        log::debug!("pinned link on {iface} now runs the new program");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cors_filter_common::pinned::name;

    use super::*;

    /// The program spells its map names in `#[map(name = ...)]`
    /// attributes; they must be the shared ones, every one of them.
    #[test]
    fn object_maps_are_the_named_ones() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the eBPF object parses");
        let mut found: Vec<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            // aya-log's ring buffer, and the sections of the program's
            // statics, are not the filter's.
            .filter(|map| *map != "AYA_LOGS" && !map.starts_with('.'))
            .collect();
        found.sort();
        let mut named: Vec<&str> = pinned_maps(TableSizes::default())
            .iter()
            .map(|spec| spec.name)
            .chain([name::SCRATCH])
            .collect();
        named.sort();
        assert_eq!(found, named);
    }
}
