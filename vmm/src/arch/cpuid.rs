//! The guest's CPUID: what KVM supports, filtered per vCPU for topology and
//! the hypervisor bit, and by a named profile for features to hide.

use kvm_bindings::CpuId;

/// Which features the guest may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuidProfile {
    /// Everything KVM reports as supported.
    #[default]
    Host,
    /// Hides features that nested or shadow-paging KVMs are known to
    /// emulate badly (CMPXCHG16B, XSAVE and AVX, PMU): a conservative
    /// baseline for migration-like portability and for debugging.
    Baseline,
}

impl std::str::FromStr for CpuidProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(CpuidProfile::Host),
            "baseline" => Ok(CpuidProfile::Baseline),
            other => Err(format!(
                "unknown CPUID profile `{other}` (use host or baseline)"
            )),
        }
    }
}

const LEAF1_ECX_CX16: u32 = 1 << 13;
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF1_ECX_AVX: u32 = 1 << 28;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
const LEAF7_EBX_AVX2: u32 = 1 << 5;
const LEAF7_EBX_AVX512F: u32 = 1 << 16;

/// Bits needed to number `count` items (x2APIC ID shift width).
fn shift_for(count: u32) -> u32 {
    32 - count.saturating_sub(1).leading_zeros()
}

/// Adjusts `cpuid` for vCPU `index` of `count`.
pub fn filter(cpuid: &mut CpuId, index: u8, count: u8, profile: CpuidProfile) {
    let count = u32::from(count.max(1));
    let index = u32::from(index);
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            0x1 => {
                // APIC ID, logical processor count, CLFLUSH line size (8 * 8 bytes).
                entry.ebx = (index << 24) | ((count & 0xff) << 16) | (8 << 8) | (entry.ebx & 0xff);
                entry.ecx |= LEAF1_ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= LEAF1_EDX_HTT;
                } else {
                    entry.edx &= !LEAF1_EDX_HTT;
                }
                if profile == CpuidProfile::Baseline {
                    entry.ecx &=
                        !(LEAF1_ECX_CX16 | LEAF1_ECX_XSAVE | LEAF1_ECX_OSXSAVE | LEAF1_ECX_AVX);
                }
            }
            0x4 => {
                // Cores per package - 1 in bits 31:26; threads sharing the cache.
                entry.eax &= 0x3ff;
                entry.eax |= (count - 1) << 26;
                if (entry.eax >> 5) & 0x7 >= 3 {
                    entry.eax |= (count - 1) << 14;
                }
            }
            0x7 if entry.index == 0 && profile == CpuidProfile::Baseline => {
                entry.ebx &= !(LEAF7_EBX_AVX2 | LEAF7_EBX_AVX512F);
            }
            0xa => {
                // No virtual PMU is exposed.
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            0xb | 0x1f => {
                // One thread per core, `count` cores in one package.
                entry.edx = index;
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = 1 << 8;
                    }
                    1 => {
                        entry.eax = shift_for(count);
                        entry.ebx = count;
                        entry.ecx = (2 << 8) | 1;
                    }
                    n => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = n;
                    }
                }
            }
            0xd if profile == CpuidProfile::Baseline => {
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(1, 0),
            entry(4, 0),
            entry(7, 0),
            entry(0xa, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
        ])
        .expect("cpuid")
    }

    #[test]
    fn topology_and_apic_ids_per_vcpu() {
        let mut cpuid = sample();
        filter(&mut cpuid, 2, 4, CpuidProfile::Host);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 2, "APIC ID");
        assert_eq!((e[0].ebx >> 16) & 0xff, 4, "logical processors");
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(e[1].eax >> 26, 3, "cores - 1");
        assert_eq!(e[3].eax, 0, "no PMU");
        assert_eq!((e[5].eax, e[5].ebx, e[5].edx), (2, 4, 2));
        assert_eq!(e[6].ebx, 0);
        assert_eq!(e[6].ecx, 2);
        assert_ne!(e[0].ecx & LEAF1_ECX_CX16, 0, "host profile keeps CX16");
    }

    #[test]
    fn baseline_profile_hides_fragile_features() {
        let mut cpuid = sample();
        filter(&mut cpuid, 0, 1, CpuidProfile::Baseline);
        let e = cpuid.as_slice();
        assert_eq!(
            e[0].ecx & (LEAF1_ECX_CX16 | LEAF1_ECX_XSAVE | LEAF1_ECX_AVX),
            0
        );
        assert_eq!(e[0].edx & LEAF1_EDX_HTT, 0, "single vCPU has no HTT");
        assert_eq!(e[2].ebx & LEAF7_EBX_AVX2, 0);
    }

    #[test]
    fn shift_widths() {
        assert_eq!(shift_for(1), 0);
        assert_eq!(shift_for(2), 1);
        assert_eq!(shift_for(3), 2);
        assert_eq!(shift_for(64), 6);
    }

    #[test]
    fn profiles_parse() {
        assert_eq!(
            "baseline".parse::<CpuidProfile>(),
            Ok(CpuidProfile::Baseline)
        );
        assert!("fast".parse::<CpuidProfile>().is_err());
    }
}
