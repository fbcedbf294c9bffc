//! The loaded eBPF program: maps filled, pinned and attached. Dropping a
//! `Filter` detaches it and removes its pins.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Array, LpmTrie, MapData},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use aya_log::EbpfLogger;
use cors_filter_common::{FilterConfig, PortBitmap, origin::OriginKey};

use crate::{
    allowlist::AllowEntry,
    pins::{PINNED_MAPS, pin_path, prepare_pin_dir, remove_pins},
};

/// The eBPF object, built by this crate's build script.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cors-filter-ebpf"));
const PROGRAM: &str = "cors_filter";

pub struct Filter {
    ebpf: Ebpf,
    links: Vec<(String, XdpLinkId)>,
    pin_dir: Option<PathBuf>,
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("the eBPF object has no map {name}"))
}

impl Filter {
    /// Loads the object into the kernel (maps created, program verified,
    /// nothing attached) and takes its log ring buffer.
    pub fn load() -> Result<(Filter, EbpfLogger<&'static dyn log::Log>)> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT).context("cannot load the eBPF object")?;
        let logger = EbpfLogger::init(&mut ebpf).context("cannot set up eBPF logging")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("the eBPF object has no program {PROGRAM}"))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is not an XDP program"))?;
        program
            .load()
            .context("the kernel rejected the XDP program")?;
        match program.info().map(|i| i.verified_instruction_count()) {
            Ok(Some(count)) => {
                log::info!("XDP program verified: {count} instructions processed by the verifier")
            }
            Ok(None) => log::info!("XDP program verified"),
            Err(e) => log::warn!("XDP program verified, but its info is unreadable: {e}"),
        }
        Ok((
            Filter {
                ebpf,
                links: Vec::new(),
                pin_dir: None,
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

    /// Pins the shared maps under `pin_dir` (mode 0700).
    pub fn pin(&mut self, pin_dir: &Path) -> Result<()> {
        prepare_pin_dir(pin_dir)?;
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

    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<()> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .context("program vanished")?
            .try_into()?;
        let link = program
            .attach(iface, mode)
            .with_context(|| format!("cannot attach XDP ({mode:?} mode) to interface {iface}"))?;
        self.links.push((iface.to_owned(), link));
        Ok(())
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        if let Some(Ok(program)) = self.ebpf.program_mut(PROGRAM).map(<&mut Xdp>::try_from) {
            for (iface, link) in self.links.drain(..) {
                match program.detach(link) {
                    Ok(()) => log::info!("detached from {iface}"),
                    Err(e) => log::error!("cannot detach from {iface}: {e}"),
                }
            }
        }
        if let Some(pin_dir) = self.pin_dir.take()
            && let Err(e) = remove_pins(&pin_dir)
        {
            log::error!("{e:#}");
        }
    }
}
