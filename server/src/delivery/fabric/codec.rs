//! The payload format both transports carry: `<process> <entry>;<entry>;…`, one short
//! entry per signal, each payload under [`MAX_PAYLOAD`] bytes.

use courier_protocol::api::keys::DeviceRef;
use courier_protocol::{DeviceId, UserId};
use uuid::Uuid;

use super::Signal;

/// `NOTIFY` payloads must stay under 8,000 bytes (NATS takes 1 MiB by default; the same
/// limit keeps one encoding for both).
pub(super) const MAX_PAYLOAD: usize = 7_500;

fn encode_device(out: &mut String, device: DeviceRef) {
    out.push_str(&device.user_id.as_uuid().simple().to_string());
    out.push(':');
    out.push_str(&device.device_id.get().to_string());
}

fn encode(signal: Signal) -> String {
    let mut out = String::with_capacity(64);
    match signal {
        Signal::Items { device, seq } => {
            out.push_str("i:");
            encode_device(&mut out, device);
            out.push(':');
            out.push_str(&seq.to_string());
        }
        Signal::Removed { device } => {
            out.push_str("r:");
            encode_device(&mut out, device);
        }
        Signal::TokenReplaced { device } => {
            out.push_str("t:");
            encode_device(&mut out, device);
        }
        Signal::Connected { device, at_ms } => {
            out.push_str("c:");
            encode_device(&mut out, device);
            out.push(':');
            out.push_str(&at_ms.to_string());
        }
        Signal::DevicesChanged { user } => {
            out.push_str("d:");
            out.push_str(&user.as_uuid().simple().to_string());
        }
        Signal::Resync => out.push('s'),
    }
    out
}

fn decode(entry: &str) -> Option<Signal> {
    let mut parts = entry.split(':');
    let kind = parts.next()?;
    if kind == "s" {
        return Some(Signal::Resync);
    }
    let user = UserId::from(Uuid::parse_str(parts.next()?).ok()?);
    if kind == "d" {
        return Some(Signal::DevicesChanged { user });
    }
    let device = DeviceId::new(parts.next()?.parse().ok()?).ok()?;
    let device = DeviceRef::new(user, device);
    let signal = match kind {
        "i" => Signal::Items {
            device,
            seq: parts.next()?.parse().ok()?,
        },
        "r" => Signal::Removed { device },
        "t" => Signal::TokenReplaced { device },
        "c" => Signal::Connected {
            device,
            at_ms: parts.next()?.parse().ok()?,
        },
        _ => return None,
    };
    Some(signal)
}

/// Payloads for a batch: `<process> <entry>;<entry>;…`, each under [`MAX_PAYLOAD`].
pub(super) fn payloads(process: &str, signals: &[Signal]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for signal in signals {
        let entry = encode(*signal);
        if !current.is_empty() && current.len() + entry.len() + 1 > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(process);
            current.push(' ');
        } else {
            current.push(';');
        }
        current.push_str(&entry);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The signals in another process's payload; nothing for this process's own (or for a
/// payload that is not ours at all). Entries that do not decode are skipped.
pub(super) fn signals_from<'a>(
    process: &str,
    payload: &'a str,
) -> impl Iterator<Item = Signal> + 'a {
    let entries = match payload.split_once(' ') {
        Some((from, entries)) if from != process => entries,
        _ => "",
    };
    entries
        .split(';')
        .filter(|entry| !entry.is_empty())
        .filter_map(decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceRef {
        DeviceRef::new(UserId::new_random(), DeviceId::new(7).unwrap())
    }

    #[test]
    fn signals_round_trip_and_payloads_stay_under_the_limit() {
        let device = device();
        let signals: Vec<Signal> = (0..1_000)
            .map(|seq| match seq % 6 {
                0 => Signal::Items { device, seq },
                1 => Signal::Removed { device },
                4 => Signal::TokenReplaced { device },
                2 => Signal::Connected { device, at_ms: seq },
                3 => Signal::DevicesChanged {
                    user: device.user_id,
                },
                _ => Signal::Resync,
            })
            .collect();
        let payloads = payloads("p1", &signals);
        assert!(payloads.len() > 1);
        let mut decoded = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD);
            let (from, entries) = payload.split_once(' ').unwrap();
            assert_eq!(from, "p1");
            decoded.extend(entries.split(';').map(|e| decode(e).unwrap()));
        }
        assert_eq!(decoded, signals);
    }

    #[test]
    fn a_process_applies_the_others_payloads_but_not_its_own_or_garbage() {
        let device = device();
        let signals = [Signal::Items { device, seq: 3 }, Signal::Removed { device }];
        let payload = payloads("other", &signals).remove(0);
        assert_eq!(signals_from("me", &payload).collect::<Vec<_>>(), signals);
        assert_eq!(signals_from("other", &payload).count(), 0);
        // A stranger's message on the subject, or a broken entry, is skipped.
        assert_eq!(signals_from("me", "no-space-here").count(), 0);
        assert_eq!(
            signals_from("me", "other x:1;s;i:zz").collect::<Vec<_>>(),
            [Signal::Resync]
        );
    }
}
