//! A network card's MAC address: parsed from and printed as
//! `xx:xx:xx:xx:xx:xx`, and derived from a seed when none is given.

use std::fmt;
use std::str::FromStr;

/// A MAC address a network card can have: unicast and not all zeros when
/// it was parsed or derived here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// The address's six bytes, as the card's configuration space holds
    /// them.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }

    /// An address that stays the same from run to run: locally
    /// administered and unicast, the rest from a hash of `seed` (the TAP
    /// name and the interface's index, say).
    pub fn stable(seed: &str) -> MacAddr {
        // FNV-1a, 64 bits.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = h.to_le_bytes();
        MacAddr([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

impl FromStr for MacAddr {
    type Err = String;

    /// `XX:XX:XX:XX:XX:XX`, hex in either case; a multicast or all-zero
    /// address is refused, since a card cannot have it.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("'{s}' is not a MAC address: expected six hex pairs such as 02:00:00:00:00:01")
        };
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in mac.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if mac[0] & 1 != 0 {
            return Err(format!(
                "MAC {s} is a multicast address (lowest bit of the first byte set); a card needs a unicast one"
            ));
        }
        if mac == [0; 6] {
            return Err("MAC 00:00:00:00:00:00 is not a usable address".into());
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(bytes: [u8; 6]) -> Self {
        MacAddr(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let m: MacAddr = "02:AB:cd:00:00:ff".parse().unwrap();
        assert_eq!(m.bytes(), [0x02, 0xab, 0xcd, 0, 0, 0xff]);
        assert_eq!(m.to_string(), "02:ab:cd:00:00:ff");
    }

    #[test]
    fn refuses_what_a_card_cannot_have() {
        for (s, why) in [
            ("02:00:00:00:00", "six hex pairs"),
            ("02:00:00:00:00:01:02", "six hex pairs"),
            ("02:00:00:00:00:1", "six hex pairs"),
            ("02:00:00:00:00:zz", "six hex pairs"),
            ("01:00:5e:00:00:01", "multicast"),
            ("00:00:00:00:00:00", "not a usable address"),
        ] {
            let e = s.parse::<MacAddr>().unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn stable_addresses_are_local_unicast_and_differ_by_seed() {
        let a = MacAddr::stable("tap0#0");
        assert_eq!(a, MacAddr::stable("tap0#0"));
        assert_ne!(a, MacAddr::stable("tap1#0"));
        assert_ne!(a, MacAddr::stable("tap0#1"));
        for seed in ["", "x", "tap0#0", "a-very-long-tap-name#15"] {
            let m = MacAddr::stable(seed).bytes();
            assert_eq!(m[0] & 0x03, 0x02, "{seed}: locally administered unicast");
        }
    }
}
