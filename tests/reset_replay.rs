//! `action = "reset"` through the real program with `cors-filter replay`
//! (BPF_PROG_TEST_RUN, attached nowhere: nothing is sent anywhere): which
//! frames get a reset, and the reset frames the kernel hands back
//! (`--replies`), checked field by field and checksum by checksum with an
//! independent parser. Needs root (it loads BPF); fails, never skips,
//! without it.

use anyhow::{Result, ensure};
use cors_filter_tests::{
    frames::packet::{
        ETH_P_8021AD, ETH_P_8021Q, Ipv6Ext, Packet, TCP_ACK, TCP_ACK_NUM, TCP_FIN, TCP_PSH,
        TCP_SEQ, TCP_SYN,
    },
    frames::replay::{replay, replay_with_replies},
    frames::reset::{ResetNumbers, check_reset},
    require_root,
};

const ALLOWED: &str = "https://app.example.net";
const DENIED: &str = "https://evil.example";

fn config(extra: &str) -> String {
    format!("ports = [8080, 80]\nallow = [\"{ALLOWED}\"]\n{extra}\n")
}

fn preflight(origin: &str) -> Vec<u8> {
    format!(
        "OPTIONS /api/items HTTP/1.1\r\nHost: api.example.net\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
    )
    .into_bytes()
}

/// Every way a frame that must not pass can look (transport variants, and
/// each outcome that drops), each answered with a reset built right.
#[test]
fn every_frame_kept_out_is_answered_with_a_valid_reset() -> Result<()> {
    require_root()?;
    let denied = preflight(DENIED);
    let cases: Vec<(&str, Packet, &str)> = vec![
        ("IPv4", Packet::ipv4(&denied), "preflight_deny"),
        (
            "IPv4 and TCP options",
            Packet::ipv4(&denied)
                .ipv4_options(&[0x94, 0x04, 0, 0, 0x01, 0x07, 0x07, 0x04, 0, 0, 0, 0])
                .tcp_options(&[2, 4, 5, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 4, 2]),
            "preflight_deny",
        ),
        (
            "one VLAN tag",
            Packet::ipv4(&denied).vlan(ETH_P_8021Q, 100),
            "preflight_deny",
        ),
        (
            "QinQ over IPv6",
            Packet::ipv6(&denied)
                .vlan(ETH_P_8021AD, 100)
                .vlan(ETH_P_8021Q, 200),
            "preflight_deny",
        ),
        ("IPv6", Packet::ipv6(&denied), "preflight_deny"),
        (
            "IPv6 with hop-by-hop, routing and destination options",
            Packet::ipv6(&denied)
                .ext(Ipv6Ext::HopByHop { len: 16 })
                .ext(Ipv6Ext::Routing { segments: 1 })
                .ext(Ipv6Ext::DestOpts { len: 8 }),
            "preflight_deny",
        ),
        (
            "IPv6 with an authentication header and an atomic fragment header",
            Packet::ipv6(&denied)
                .ext(Ipv6Ext::Fragment {
                    offset: 0,
                    more: false,
                })
                .ext(Ipv6Ext::Auth { len: 24 }),
            "preflight_deny",
        ),
        (
            "Ethernet padding after the packet, not kept in the reply",
            Packet::ipv4(&denied).trailer(&[0xee; 18]),
            "preflight_deny",
        ),
        (
            "a 9000-byte segment whose tail is in XDP fragments",
            Packet::ipv4(&[denied.clone(), vec![b'x'; 9000 - denied.len()]].concat()),
            "preflight_deny",
        ),
        (
            "a preflight in a SYN (TCP Fast Open): no ACK, the SYN counts one",
            Packet::ipv4(&denied).tcp_flags(TCP_SYN),
            "preflight_deny",
        ),
        (
            "a preflight with FIN: the FIN counts one",
            Packet::ipv6(&denied).tcp_flags(TCP_FIN | TCP_PSH | TCP_ACK),
            "preflight_deny",
        ),
        (
            "port 80",
            Packet::ipv4(&denied).dst_port(80).src_port(55555),
            "preflight_deny",
        ),
        (
            "a malformed Origin",
            Packet::ipv4(&preflight("https://a.example.net/path")),
            "malformed",
        ),
        (
            "a head of more header lines than judged",
            Packet::ipv6(&too_many_lines()),
            "incomplete",
        ),
    ];
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, p, _)| p.build()).collect();
    let (lines, replies) = replay_with_replies(
        &config("action = \"reset\"\non_oversized_head = \"drop\""),
        &frames,
    )?;
    let mut wrong = Vec::new();
    let mut replies = replies.iter();
    for (((name, _, reason), frame), line) in cases.iter().zip(&frames).zip(&lines) {
        if line.verdict != "reset" || line.reason != *reason {
            wrong.push(format!(
                "{name}: expected reset ({reason}), got {} ({})",
                line.verdict, line.reason
            ));
            continue;
        }
        let reply = replies.next().expect("one reply per reset line");
        if let Err(e) = check_reset(frame, reply) {
            wrong.push(format!("{name}: {e:#}\n  reply: {reply:02x?}"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    Ok(())
}

/// The numbers themselves, not only their agreement with the parser: the
/// frame builder's segment has seq 1,000,000 and ack 2,000,000.
#[test]
fn reset_numbers_follow_the_segment() -> Result<()> {
    require_root()?;
    let denied = preflight(DENIED);
    let len = denied.len() as u32;
    let frames = vec![
        Packet::ipv4(&denied).build(),
        Packet::ipv4(&denied).tcp_flags(TCP_SYN).build(),
        Packet::ipv6(&denied)
            .tcp_flags(TCP_FIN | TCP_ACK)
            .ext(Ipv6Ext::DestOpts { len: 8 })
            .build(),
    ];
    let (lines, replies) = replay_with_replies(&config("action = \"reset\""), &frames)?;
    ensure!(
        lines.iter().all(|l| l.verdict == "reset"),
        "not all reset: {lines:?}"
    );
    let numbers: Vec<ResetNumbers> = frames
        .iter()
        .zip(&replies)
        .map(|(f, r)| check_reset(f, r))
        .collect::<Result<_>>()?;
    assert_eq!(
        numbers,
        [
            ResetNumbers {
                seq: TCP_ACK_NUM,
                ack: TCP_SEQ + len
            },
            ResetNumbers {
                seq: 0,
                ack: TCP_SEQ + len + 1
            },
            ResetNumbers {
                seq: TCP_ACK_NUM,
                ack: TCP_SEQ + len + 1
            },
        ]
    );
    Ok(())
}

/// With `action = "reset"`, what passes still passes, untouched, and
/// monitor mode still drops nothing; without `action`, a denied preflight
/// is dropped, not reset.
#[test]
fn reset_changes_only_what_is_dropped() -> Result<()> {
    require_root()?;
    let denied = preflight(DENIED);
    let passing = vec![
        Packet::ipv4(&preflight(ALLOWED)).build(),
        Packet::ipv6(b"GET / HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n").build(),
        Packet::ipv4(&denied).dst_port(8081).build(),
        Packet::ipv4(&too_many_lines()).build(),
    ];
    // An incomplete head passes only where oversized heads do.
    let (lines, replies) = replay_with_replies(
        &config("action = \"reset\"\non_oversized_head = \"pass\""),
        &passing,
    )?;
    let reasons: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.verdict.as_str(), l.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("pass", "preflight_allow"),
            ("pass", "pass_not_preflight"),
            ("pass", "pass_port_not_inspected"),
            ("pass", "incomplete"),
        ]
    );
    assert!(replies.is_empty(), "{} replies", replies.len());

    let monitor = replay(
        &config("action = \"reset\"\nmode = \"monitor\""),
        &[Packet::ipv4(&denied).build()],
    )?;
    assert_eq!(
        (monitor[0].verdict.as_str(), monitor[0].reason.as_str()),
        ("pass", "preflight_deny")
    );

    for extra in ["", "action = \"drop\""] {
        let (lines, replies) =
            replay_with_replies(&config(extra), &[Packet::ipv6(&denied).build()])?;
        assert_eq!(
            (lines[0].verdict.as_str(), lines[0].reason.as_str()),
            ("drop", "preflight_deny"),
            "{extra:?}"
        );
        assert!(replies.is_empty());
    }
    Ok(())
}

/// A preflight of more header lines than the filter judges: incomplete,
/// dropped by default.
fn too_many_lines() -> Vec<u8> {
    let lines = "A: b\r\n".repeat(cors_filter_common::stream::MAX_HEAD_LINES as usize + 1);
    format!(
        "OPTIONS / HTTP/1.1\r\n{lines}Origin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
    )
    .into_bytes()
}
