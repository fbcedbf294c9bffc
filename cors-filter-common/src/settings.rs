//! The filter's runtime settings and the set of inspected ports, as they are
//! laid out in the `CONFIG` and `PORTS_n` maps, and the two generations of
//! policy maps that let a reload swap the whole policy at once.
//!
//! With the `user` feature, the settings' enums are also what the config
//! file (serde, spelled in lower case: `mode = "monitor"`) and the command
//! line (clap, `--mode monitor`) read: one type per setting, no conversion.
//! Their variants' docs stay out of the command line's help (`help = None`),
//! which lists the values only.

/// What the filter does with a disallowed preflight (`mode`, `--mode`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize, clap::ValueEnum),
    serde(rename_all = "lowercase")
)]
pub enum Mode {
    /// Drop it.
    #[cfg_attr(feature = "user", value(help = None::<&str>))]
    Enforce = 0,
    /// Count it as denied and let it pass.
    #[cfg_attr(feature = "user", value(help = None::<&str>))]
    Monitor = 1,
}

impl Mode {
    /// The config file's spelling (serde's; a test holds them together).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Monitor => "monitor",
        }
    }
}

/// What the filter does with a judged request whose head is longer than
/// `max_head_bytes` or [`crate::stream::MAX_HEAD_LINES`] lines
/// (`on_oversized_head`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum OnIncomplete {
    Pass = 0,
    Drop = 1,
}

impl OnIncomplete {
    /// The config file's spelling (serde's; a test holds them together).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
        }
    }
}

/// Entries the `ALLOWLIST_n` maps can hold. They are made without
/// preallocation (`BPF_F_NO_PREALLOC`), so the cost of a large bound is only
/// paid when it is used.
pub const ALLOWLIST_MAX_ENTRIES: u32 = 1 << 18;

/// The policy (settings, ports, allowlist) exists twice: generation 0 in
/// `CONFIG[0]`, `PORTS_0`, `ALLOWLIST_0` and generation 1 in `CONFIG[1]`,
/// `PORTS_1`, `ALLOWLIST_1`. The `ACTIVE` map's single `u32` counts the
/// policies installed so far; its low bit names the generation the program
/// reads. A reload fills the other generation while the program keeps
/// reading this one, then bumps `ACTIVE`: one aligned 4-byte store, so every
/// packet sees either the old policy whole or the new one whole.
pub struct Generation;

impl Generation {
    pub const COUNT: u32 = 2;

    /// The generation the program reads when `ACTIVE` holds `installed`.
    #[inline(always)]
    pub const fn of(installed: u32) -> u32 {
        installed & 1
    }
}

/// How the filter gets rid of a packet it does not let through (`action`,
/// `--action`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize, clap::ValueEnum),
    serde(rename_all = "lowercase")
)]
pub enum Action {
    /// Drop it silently: the client waits for retransmissions to time out.
    #[cfg_attr(feature = "user", value(help = None::<&str>))]
    Drop = 0,
    /// Drop it and answer the client with a TCP reset (see [`crate::reset`]),
    /// so that it fails at once.
    #[cfg_attr(feature = "user", value(help = None::<&str>))]
    Reset = 1,
    /// Reset on connections that came through a proxy (they started with
    /// a PROXY header), drop on the others: the config's default. Behind a
    /// proxy a drop holds the proxy's upstream connection until its
    /// timeout (3 s to 60 s measured per request) and its kernel sends the
    /// denied bytes again after it closed; a reset ends both at once.
    ///
    /// Only ever the default: neither the config file nor the command line
    /// can spell it.
    #[cfg_attr(feature = "user", serde(skip), value(skip))]
    ResetProxied = 2,
}

impl Action {
    /// The config file's spelling (serde's; a test holds them together),
    /// and `reset-proxied` for the default the file cannot spell.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Reset => "reset",
            Self::ResetProxied => "reset-proxied",
        }
    }
}

/// What the filter does with a connection that starts HTTP/2 on an
/// inspected port (`Outcome::Http2`): HTTP/2 frames code their headers
/// with HPACK, which the filter does not read (`http2`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Http2 {
    /// Refuse it (as `action` says): the default, since a browser's
    /// disallowed request carried over HTTP/2 would otherwise pass unjudged.
    Drop = 0,
    /// Let it pass, unfollowed.
    Pass = 1,
}

impl Http2 {
    /// The config file's spelling (serde's; a test holds them together).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Pass => "pass",
        }
    }
}

/// One entry of the `CONFIG` array map (one per generation).
///
/// Plain integers rather than the enums above, because the kernel side reads
/// whatever userspace wrote and must not trust it to be a valid discriminant.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    pub mode: u32,
    pub on_incomplete: u32,
    pub action: u32,
    /// Bit `d` set when the generation's allowlist has a wildcard entry
    /// whose prefix ends at dot `d` of the reversed host (a domain of
    /// `d + 1` labels): a lookup tries only those prefixes (see
    /// `crate::allow_map`). Set by the policy install from the entries.
    pub wildcard_depths: u32,
    /// Bytes a judged request head may have, request line included (see
    /// `crate::stream`); a longer one is `Incomplete`.
    pub max_head_bytes: u32,
    /// An [`Http2`] value.
    pub http2: u32,
}

impl FilterConfig {
    /// A configuration that drops (`Action::Drop`); see [`Self::with_action`].
    pub const fn new(mode: Mode, on_incomplete: OnIncomplete) -> Self {
        Self {
            mode: mode as u32,
            on_incomplete: on_incomplete as u32,
            action: Action::Drop as u32,
            wildcard_depths: 0,
            max_head_bytes: crate::stream::DEFAULT_MAX_HEAD_BYTES,
            http2: Http2::Drop as u32,
        }
    }

    pub const fn with_http2(self, http2: Http2) -> Self {
        Self {
            http2: http2 as u32,
            ..self
        }
    }

    /// Whether HTTP/2 passes. Anything but an explicit pass value refuses:
    /// a corrupt value fails closed.
    #[inline(always)]
    pub fn passes_http2(&self) -> bool {
        self.http2 == Http2::Pass as u32
    }

    pub const fn with_action(self, action: Action) -> Self {
        Self {
            action: action as u32,
            ..self
        }
    }

    /// Whether what is not let through is answered with a reset. Anything
    /// but an explicit reset value drops: a corrupt value fails closed to
    /// the quiet default, and never makes the program write packets.
    /// ([`Action::ResetProxied`] is made one or the other per connection
    /// by [`Self::for_connection`] first.)
    #[inline(always)]
    pub fn resets(&self) -> bool {
        self.action == Action::Reset as u32
    }

    /// The settings for a connection that started with a PROXY header
    /// (`proxied`) or not: [`Action::ResetProxied`] becomes a reset or a
    /// drop.
    #[inline(always)]
    pub fn for_connection(mut self, proxied: bool) -> Self {
        if self.action == Action::ResetProxied as u32 {
            self.action = if proxied { Action::Reset } else { Action::Drop } as u32;
        }
        self
    }

    /// Anything but an explicit monitor value enforces: a corrupt value
    /// fails closed.
    #[inline(always)]
    pub fn enforcing(&self) -> bool {
        self.mode != Mode::Monitor as u32
    }

    /// Whether oversized heads are dropped: any value but `Pass`, so that
    /// a corrupt one fails closed, as `mode`, `action` and `http2` do.
    #[inline(always)]
    pub fn drop_incomplete(&self) -> bool {
        self.on_incomplete != OnIncomplete::Pass as u32
    }

    // The settings as enums, for userspace to show them. Each reads its
    // integer as the predicate above does, so a corrupt value shows as
    // what the program does with it.

    /// `mode`: see [`Self::enforcing`].
    pub const fn mode(&self) -> Mode {
        if self.mode == Mode::Monitor as u32 {
            Mode::Monitor
        } else {
            Mode::Enforce
        }
    }

    /// `on_incomplete`: see [`Self::drop_incomplete`].
    pub const fn on_incomplete(&self) -> OnIncomplete {
        if self.on_incomplete == OnIncomplete::Pass as u32 {
            OnIncomplete::Pass
        } else {
            OnIncomplete::Drop
        }
    }

    /// `action`: see [`Self::resets`] and [`Self::for_connection`].
    pub const fn action(&self) -> Action {
        match self.action {
            a if a == Action::Reset as u32 => Action::Reset,
            a if a == Action::ResetProxied as u32 => Action::ResetProxied,
            _ => Action::Drop,
        }
    }

    /// `http2`: see [`Self::passes_http2`].
    pub const fn http2(&self) -> Http2 {
        if self.http2 == Http2::Pass as u32 {
            Http2::Pass
        } else {
            Http2::Drop
        }
    }
}

/// What the filter does on each destination port: eight bits per port
/// ([`PortFlags`]), kept in an array map of `u64` words: one array lookup
/// per packet, whatever the number of ports.
pub struct PortBitmap;

/// A port's bits in the [`PortBitmap`].
pub struct PortFlags;

impl PortFlags {
    /// Requests to the port are inspected.
    pub const INSPECT: u64 = 1;
    /// Requests with an unsafe method to the port are checked too
    /// (`protect_unsafe_methods`); only ever set with [`Self::INSPECT`].
    pub const PROTECT_UNSAFE: u64 = 2;
    /// Retired, never set and never to be reused: a pinned number keeps
    /// its meaning. It was `unsafe_on_incomplete = "pass"` (such a request
    /// whose head went on past the per-segment window passed); requests
    /// are now judged whole across segments, and one whose head is longer
    /// than `max_head_bytes` is handled by `on_oversized_head`
    /// (`FilterConfig::on_incomplete`), for every port alike.
    pub const PASS_INCOMPLETE_UNSAFE: u64 = 4;
    /// Denial events name the client the last element of the request's
    /// `X-Forwarded-For` gives (a trusted proxy appends it); never a
    /// verdict's input. Not set with [`Self::CLIENT_FORWARDED`].
    pub const CLIENT_X_FORWARDED_FOR: u64 = 8;
    /// Likewise, from the `for=` of the last element of `Forwarded`.
    pub const CLIENT_FORWARDED: u64 = 16;
    pub const BITS: u32 = 8;
    pub const MASK: u64 = (1 << Self::BITS) - 1;
}

impl PortBitmap {
    /// Number of `u64` words needed for all 65536 ports.
    pub const WORDS: u32 = 65536 * PortFlags::BITS / 64;

    /// The array index of `port`'s word and the shift of its flags in it.
    #[inline(always)]
    pub const fn slot(port: u16) -> (u32, u32) {
        const PER_WORD: u32 = 64 / PortFlags::BITS;
        (
            port as u32 / PER_WORD,
            (port as u32 % PER_WORD) * PortFlags::BITS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the config file reads `name` as.
    #[cfg(feature = "user")]
    fn read<'de, T: serde::Deserialize<'de>>(name: &'de str) -> Result<T, serde::de::value::Error> {
        use serde::de::IntoDeserializer as _;
        T::deserialize(name.into_deserializer())
    }

    #[cfg(feature = "user")]
    #[test]
    fn names_are_the_config_files_spelling() {
        for mode in [Mode::Enforce, Mode::Monitor] {
            assert_eq!(read::<Mode>(mode.name()), Ok(mode));
        }
        for on in [OnIncomplete::Pass, OnIncomplete::Drop] {
            assert_eq!(read::<OnIncomplete>(on.name()), Ok(on));
        }
        for action in [Action::Drop, Action::Reset] {
            assert_eq!(read::<Action>(action.name()), Ok(action));
        }
        // The default only: the file cannot spell it.
        assert!(read::<Action>(Action::ResetProxied.name()).is_err());
        for http2 in [Http2::Drop, Http2::Pass] {
            assert_eq!(read::<Http2>(http2.name()), Ok(http2));
        }
    }

    #[test]
    fn accessors_read_the_integers_as_the_program_does() {
        let settings = FilterConfig::new(Mode::Monitor, OnIncomplete::Drop)
            .with_action(Action::ResetProxied)
            .with_http2(Http2::Pass);
        assert_eq!(settings.mode(), Mode::Monitor);
        assert_eq!(settings.on_incomplete(), OnIncomplete::Drop);
        assert_eq!(settings.action(), Action::ResetProxied);
        assert_eq!(settings.http2(), Http2::Pass);
        let corrupt = FilterConfig {
            mode: 7,
            on_incomplete: 7,
            action: 7,
            http2: 7,
            ..settings
        };
        assert_eq!(corrupt.mode(), Mode::Enforce);
        assert_eq!(corrupt.on_incomplete(), OnIncomplete::Drop);
        assert!(corrupt.drop_incomplete());
        assert_eq!(corrupt.action(), Action::Drop);
        assert_eq!(corrupt.http2(), Http2::Drop);
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `FilterConfig` is `repr(C)`, made of six `u32`s, has no
    // padding and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::FilterConfig {}
}
