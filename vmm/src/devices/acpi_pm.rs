//! The ACPI PM1a event and control blocks: the guest powers off by writing
//! SLP_TYP = S5 with SLP_EN to PM1 control.

use std::sync::Arc;

use super::bus::BusDevice;
use crate::arch::acpi::{PM1_CNT_SLP_EN, PM1_CNT_SLP_TYP_SHIFT, S5_SLP_TYP};
use crate::exit::{ExitSignal, VmExit};

const PM1_CNT_OFFSET: u64 = 4;
/// SCI_EN: the platform is always in ACPI mode.
const PM1_CNT_SCI_EN: u16 = 1;

pub struct AcpiPm {
    enable: u16,
    exit: Arc<ExitSignal>,
}

impl AcpiPm {
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        AcpiPm { enable: 0, exit }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value: u16 = match offset {
            2 => self.enable,
            PM1_CNT_OFFSET => PM1_CNT_SCI_EN,
            _ => 0,
        };
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = value.to_le_bytes().get(i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let value = u16::from_le_bytes([
            data.first().copied().unwrap_or(0),
            data.get(1).copied().unwrap_or(0),
        ]);
        match offset {
            2 => self.enable = value,
            PM1_CNT_OFFSET if data.len() >= 2 => {
                let slp_typ = (value >> PM1_CNT_SLP_TYP_SHIFT) & 0x7;
                if value & PM1_CNT_SLP_EN != 0 && slp_typ == u16::from(S5_SLP_TYP) {
                    self.exit.request(VmExit::PowerOff);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_with_slp_en_powers_off() {
        let exit = Arc::new(ExitSignal::new().expect("eventfd"));
        let mut pm = AcpiPm::new(exit.clone());
        let mut cnt = [0u8; 2];
        pm.read(PM1_CNT_OFFSET, &mut cnt);
        assert_eq!(u16::from_le_bytes(cnt) & PM1_CNT_SCI_EN, 1);
        // S5 type without SLP_EN, another sleep type, and a short write do nothing.
        pm.write(PM1_CNT_OFFSET, &(5u16 << 10).to_le_bytes());
        pm.write(
            PM1_CNT_OFFSET,
            &((3u16 << 10) | PM1_CNT_SLP_EN).to_le_bytes(),
        );
        pm.write(PM1_CNT_OFFSET, &[0x20]);
        assert_eq!(exit.reason(), None);
        pm.write(
            PM1_CNT_OFFSET,
            &((5u16 << 10) | PM1_CNT_SLP_EN).to_le_bytes(),
        );
        assert_eq!(exit.reason(), Some(VmExit::PowerOff));
    }
}
