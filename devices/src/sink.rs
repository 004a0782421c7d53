//! Ports a Linux guest touches for timing or probing, answered quietly:
//! the POST/delay port 0x80 and its kin. Writes are dropped, reads return a
//! fixed value.

use crate::bus::BusDevice;

/// A device that ignores writes and reads as `value`.
pub struct Sink {
    value: u8,
}

impl Sink {
    /// A sink reading as `value`.
    pub fn new(value: u8) -> Self {
        Sink { value }
    }
}

impl BusDevice for Sink {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(self.value);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_value() {
        let mut s = Sink::new(0);
        s.write(0, &[1, 2]);
        let mut d = [9u8; 2];
        s.read(0, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
