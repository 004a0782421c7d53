//! CMOS RAM and the MC146818 real-time clock at ports 0x70 (index) and 0x71
//! (data). Time registers read the host's current UTC time, in BCD or binary
//! as register B asks, so the guest's clock starts at the real date.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;
const REG_B_24H: u8 = 0x02;
const REG_B_BINARY: u8 = 0x04;
const REG_D_VALID: u8 = 0x80;

/// A broken-down UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: u32,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
    /// 1 (Sunday) ..= 7, as the RTC counts.
    pub weekday: u32,
}

impl DateTime {
    /// The UTC date and time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Howard Hinnant's days_from_civil, inverted.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            // 1970-01-01 was a Thursday (5 in 1 = Sunday numbering).
            weekday: ((days + 4) % 7 + 1) as u32,
        }
    }
}

fn bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// What a snapshot keeps of the CMOS: its index register and RAM (the
/// clock is the host's, read when the guest reads it).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CmosSnapshot {
    /// The selected register.
    pub index: u8,
    /// The 128 bytes of RAM.
    pub ram: Vec<u8>,
}

/// CMOS RAM with the RTC's time registers.
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    now: Box<dyn Fn() -> u64 + Send>,
}

impl Cmos {
    /// A CMOS whose clock reads the host's time.
    pub fn new() -> Self {
        Self::with_clock(Box::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        }))
    }

    /// A CMOS whose clock reads `now` (seconds since the epoch); for tests.
    pub fn with_clock(now: Box<dyn Fn() -> u64 + Send>) -> Self {
        let mut ram = [0u8; 128];
        ram[REG_A as usize] = 0x26; // 32.768 kHz base, 1.024 kHz rate; UIP clear
        ram[REG_B as usize] = REG_B_24H;
        ram[REG_D as usize] = REG_D_VALID;
        Cmos { index: 0, ram, now }
    }

    /// The CMOS's state, for a snapshot.
    pub fn save(&self) -> CmosSnapshot {
        CmosSnapshot {
            index: self.index,
            ram: self.ram.to_vec(),
        }
    }

    /// Puts `snap` in place of the CMOS's state.
    pub fn restore(&mut self, snap: &CmosSnapshot) -> Result<(), String> {
        self.ram = <[u8; 128]>::try_from(snap.ram.as_slice())
            .map_err(|_| format!("cmos: {} bytes of RAM, not 128", snap.ram.len()))?;
        self.index = snap.index & 0x7f;
        Ok(())
    }

    fn read_reg(&self, reg: u8) -> u8 {
        let t = DateTime::from_unix((self.now)());
        let binary = self.ram[REG_B as usize] & REG_B_BINARY != 0;
        let enc = |v: u32| if binary { v as u8 } else { bcd(v) };
        match reg {
            REG_SECONDS => enc(t.second),
            REG_MINUTES => enc(t.minute),
            REG_HOURS => enc(t.hour),
            REG_WEEKDAY => enc(t.weekday),
            REG_DAY => enc(t.day),
            REG_MONTH => enc(t.month),
            REG_YEAR => enc(t.year % 100),
            REG_CENTURY => enc(t.year / 100),
            REG_C => 0,
            r => self.ram[r as usize & 0x7f],
        }
    }
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            0 => self.index,
            1 => self.read_reg(self.index),
            _ => 0xff,
        };
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            // Bit 7 of the index port masks NMIs; the index is 7 bits.
            0 => self.index = value & 0x7f,
            1 => match self.index {
                REG_C | REG_D => {}                               // read-only
                REG_A => self.ram[REG_A as usize] = value & 0x7f, // UIP is read-only
                i => self.ram[i as usize] = value,
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &mut Cmos, reg: u8) -> u8 {
        c.write(0, &[reg | 0x80]);
        let mut d = [0u8];
        c.read(1, &mut d);
        d[0]
    }

    #[test]
    fn civil_dates() {
        assert_eq!(
            DateTime::from_unix(0),
            DateTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 5
            }
        );
        // 2000-02-29 12:34:56 UTC, a Tuesday.
        let t = DateTime::from_unix(951_827_696);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
            (2000, 2, 29, 12, 34, 56, 3)
        );
        // 2026-11-22 23:59:59 UTC, a Sunday.
        let t = DateTime::from_unix(1_795_391_999);
        assert_eq!((t.year, t.month, t.day, t.weekday), (2026, 11, 22, 1));
    }

    #[test]
    fn time_registers_in_bcd_then_binary() {
        let mut c = Cmos::with_clock(Box::new(|| 951_827_696));
        assert_eq!(read(&mut c, REG_SECONDS), 0x56);
        assert_eq!(read(&mut c, REG_MINUTES), 0x34);
        assert_eq!(read(&mut c, REG_HOURS), 0x12);
        assert_eq!(read(&mut c, REG_DAY), 0x29);
        assert_eq!(read(&mut c, REG_MONTH), 0x02);
        assert_eq!(read(&mut c, REG_YEAR), 0x00);
        assert_eq!(read(&mut c, REG_CENTURY), 0x20);
        assert_eq!(read(&mut c, REG_A) & 0x80, 0, "no update in progress");
        assert_eq!(read(&mut c, REG_D), REG_D_VALID);
        c.write(0, &[REG_B]);
        c.write(1, &[REG_B_24H | REG_B_BINARY]);
        assert_eq!(read(&mut c, REG_SECONDS), 56);
        assert_eq!(read(&mut c, REG_CENTURY), 20);
    }

    #[test]
    fn ram_is_writable_and_status_registers_are_not() {
        let mut c = Cmos::with_clock(Box::new(|| 0));
        c.write(0, &[0x40]);
        c.write(1, &[0xab]);
        assert_eq!(read(&mut c, 0x40), 0xab);
        c.write(0, &[REG_D]);
        c.write(1, &[0]);
        assert_eq!(read(&mut c, REG_D), REG_D_VALID);
        // The index port reads back without the NMI bit.
        c.write(0, &[0xff]);
        let mut d = [0u8];
        c.read(0, &mut d);
        assert_eq!(d[0], 0x7f);
    }

    #[test]
    fn a_restored_cmos_has_the_saved_ram_and_index() {
        let mut a = Cmos::with_clock(Box::new(|| 0));
        a.write(0, &[0x20]);
        a.write(1, &[0x99]);
        a.write(0, &[0x21]);
        let snap = a.save();
        let mut b = Cmos::with_clock(Box::new(|| 0));
        b.restore(&snap).unwrap();
        assert_eq!(b.save(), snap);
        assert_eq!(read(&mut b, 0x20), 0x99);
        let short = CmosSnapshot {
            index: 0,
            ram: vec![0; 12],
        };
        assert!(b.restore(&short).unwrap_err().contains("12 bytes"));
    }
}
