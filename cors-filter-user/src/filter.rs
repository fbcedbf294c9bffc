//! The loaded eBPF program: maps filled, pinned and attached. Dropping a
//! `Filter` detaches it and removes its pins.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Array, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use aya_log::EbpfLogger;
use cors_filter_common::{Counter, FilterConfig, PortBitmap, origin::OriginKey};

use crate::{
    allowlist::AllowEntry,
    metrics::sum_counters,
    pins::{PINNED_MAPS, PinDirLock, pin_path, prepare_pin_dir, remove_pins},
    testrun::{self, TestRun},
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

enum Link {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

pub struct Filter {
    ebpf: Ebpf,
    hook: Hook,
    links: Vec<(String, Link)>,
    pin_dir: Option<PathBuf>,
    /// Held while the maps are pinned; released after they are removed.
    pin_lock: Option<PinDirLock>,
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("the eBPF object has no map {name}"))
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
    /// Loads the object into the kernel (maps created, the program for
    /// `hook` verified, nothing attached) and takes its log ring buffer.
    pub fn load(hook: Hook) -> Result<(Filter, EbpfLogger<&'static dyn log::Log>)> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT).context("cannot load the eBPF object")?;
        let logger = EbpfLogger::init(&mut ebpf).context("cannot set up eBPF logging")?;
        let info = match hook {
            Hook::Xdp(_) => {
                let program: &mut Xdp = program_mut(&mut ebpf, XDP_PROGRAM)?;
                program
                    .load()
                    .context("the kernel rejected the XDP program")?;
                program.info()
            }
            Hook::Tc => {
                let program: &mut SchedClassifier = program_mut(&mut ebpf, TC_PROGRAM)?;
                program
                    .load()
                    .context("the kernel rejected the TC program")?;
                program.info()
            }
        };
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
                links: Vec::new(),
                pin_dir: None,
                pin_lock: None,
            },
            logger,
        ))
    }

    /// Fills every map the program reads. Called before `attach`, so that the
    /// program never runs with an empty allowlist.
    pub fn configure(
        &mut self,
        config: FilterConfig,
        ports: impl IntoIterator<Item = u16>,
        allow: &[AllowEntry],
    ) -> Result<()> {
        let mut settings: Array<&mut MapData, FilterConfig> =
            Array::try_from(map_mut(&mut self.ebpf, "CONFIG")?)?;
        settings.set(0, config, 0).context("cannot write CONFIG")?;

        let mut words = vec![0u64; PortBitmap::WORDS as usize];
        for port in ports {
            let (word, bit) = PortBitmap::slot(port);
            words[word as usize] |= bit;
        }
        let mut port_map: Array<&mut MapData, u64> =
            Array::try_from(map_mut(&mut self.ebpf, "PORTS")?)?;
        for (index, word) in words.iter().enumerate().filter(|(_, w)| **w != 0) {
            port_map
                .set(index as u32, word, 0)
                .context("cannot write PORTS")?;
        }

        let mut allowlist: LpmTrie<&mut MapData, OriginKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, "ALLOWLIST")?)?;
        for entry in allow {
            allowlist
                .insert(&entry.key, entry.kind, 0)
                .with_context(|| format!("cannot add origin {} to ALLOWLIST", entry.origin))?;
        }
        Ok(())
    }

    /// Runs the loaded XDP program on `frame`, `repeat` times, with
    /// `BPF_PROG_TEST_RUN` (see [`testrun`](crate::testrun)).
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<TestRun> {
        let program: &mut Xdp = program_mut(&mut self.ebpf, XDP_PROGRAM)?;
        let fd = program
            .fd()
            .with_context(|| format!("program {XDP_PROGRAM} is not loaded"))?;
        testrun::test_run(fd.as_fd(), frame, repeat)
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize]> {
        let map = self
            .ebpf
            .map("COUNTERS")
            .context("the eBPF object has no map COUNTERS")?;
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).context("COUNTERS is not the expected per-CPU array")?;
        sum_counters(&counters)
    }

    /// Pins the shared maps under `pin_dir` (mode 0700).
    pub fn pin(&mut self, pin_dir: &Path) -> Result<()> {
        self.pin_lock = Some(prepare_pin_dir(pin_dir)?);
        self.pin_dir = Some(pin_dir.to_owned());
        for name in PINNED_MAPS {
            let path = pin_path(pin_dir, name);
            self.ebpf
                .map(name)
                .with_context(|| format!("the eBPF object has no map {name}"))?
                .pin(&path)
                .with_context(|| format!("cannot pin {name} at {}", path.display()))?;
        }
        Ok(())
    }

    /// Takes the `DENIALS` ring buffer out of the object, for the daemon
    /// to read. After [`pin`](Self::pin): a map taken out is not pinned.
    pub fn take_denials(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("DENIALS")
            .context("the eBPF object has no map DENIALS")?;
        RingBuf::try_from(map).context("DENIALS is not the expected ring buffer")
    }

    pub fn attach(&mut self, iface: &str) -> Result<()> {
        let link = match self.hook {
            Hook::Xdp(mode) => {
                let program: &mut Xdp = program_mut(&mut self.ebpf, XDP_PROGRAM)?;
                let link = program.attach(iface, mode).with_context(|| {
                    format!("cannot attach XDP ({mode:?} mode) to interface {iface}")
                })?;
                Link::Xdp(link)
            }
            Hook::Tc => {
                let program: &mut SchedClassifier = program_mut(&mut self.ebpf, TC_PROGRAM)?;
                let link = program
                    .attach(iface, TcAttachType::Ingress)
                    .with_context(|| format!("cannot attach TC ingress to interface {iface}"))?;
                Link::Tc(link)
            }
        };
        self.links.push((iface.to_owned(), link));
        Ok(())
    }

    fn detach_all(&mut self) {
        for (iface, link) in std::mem::take(&mut self.links) {
            let detached = match link {
                Link::Xdp(link) => program_mut::<Xdp>(&mut self.ebpf, XDP_PROGRAM)
                    .and_then(|p| Ok(p.detach(link)?)),
                Link::Tc(link) => program_mut::<SchedClassifier>(&mut self.ebpf, TC_PROGRAM)
                    .and_then(|p| Ok(p.detach(link)?)),
            };
            match detached {
                Ok(()) => log::info!("detached from {iface}"),
                Err(e) => log::error!("cannot detach from {iface}: {e:#}"),
            }
        }
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        self.detach_all();
        if let Some(pin_dir) = self.pin_dir.take()
            && let Err(e) = remove_pins(&pin_dir)
        {
            log::error!("{e:#}");
        }
        self.pin_lock = None;
    }
}
