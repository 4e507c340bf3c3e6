//! The guest's CPUID: what KVM supports, filtered per vCPU for topology and
//! the hypervisor bit, with what KVM offers but does not list (the
//! TSC-deadline timer) and a brand string, and by a named profile for
//! features to hide.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use kvm_ioctls::{Cap, Kvm};

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

/// What the host's KVM offers beyond `KVM_GET_SUPPORTED_CPUID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostFeatures {
    /// The local APIC's TSC-deadline mode: KVM emulates it but leaves the
    /// CPUID bit to userspace (`KVM_CAP_TSC_DEADLINE_TIMER`).
    pub tsc_deadline: bool,
}

impl HostFeatures {
    /// Asks KVM.
    pub fn probe(kvm: &Kvm) -> Self {
        HostFeatures {
            tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
        }
    }
}

/// The brand string when KVM passes none through (as nested KVMs may):
/// guests then print a name instead of "Unknown model".
pub const DEFAULT_BRAND: &str = "Keel Virtual CPU";
/// Leaves 0x8000_0002..=0x8000_0004 hold the 48-byte brand string.
const BRAND_LEAVES: std::ops::RangeInclusive<u32> = 0x8000_0002..=0x8000_0004;
const BRAND_LEN: usize = 48;
const EXTENDED_MAX_LEAF: u32 = 0x8000_0000;

const LEAF1_ECX_VMX: u32 = 1 << 5;
const LEAF1_ECX_CX16: u32 = 1 << 13;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF1_ECX_AVX: u32 = 1 << 28;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
const LEAF7_EBX_AVX2: u32 = 1 << 5;
const LEAF7_EBX_AVX512F: u32 = 1 << 16;
const EXT1_ECX_SVM: u32 = 1 << 2;
/// AMD's SVM revision and features leaf.
const SVM_FEATURES_LEAF: u32 = 0x8000_000a;

/// Bits needed to number `count` items (x2APIC ID shift width).
fn shift_for(count: u32) -> u32 {
    32 - count.saturating_sub(1).leading_zeros()
}

/// Adjusts `cpuid` for vCPU `index` of `count`.
pub fn filter(cpuid: &mut CpuId, index: u8, count: u8, profile: CpuidProfile, host: HostFeatures) {
    name_cpu(cpuid);
    let count = u32::from(count.max(1));
    let index = u32::from(index);
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            0x1 => {
                // APIC ID, logical processor count, CLFLUSH line size (8 * 8 bytes).
                entry.ebx = (index << 24) | ((count & 0xff) << 16) | (8 << 8) | (entry.ebx & 0xff);
                entry.ecx |= LEAF1_ECX_HYPERVISOR;
                // No nested virtualization: a guest hypervisor would put
                // the host KVM's nested code (a history of CVEs) in
                // reach of every guest, and a guest kernel enabling VMX
                // or SVM at boot (Linux 6.x does when KVM is built in) is
                // what made guests on nested test hosts hang.
                entry.ecx &= !LEAF1_ECX_VMX;
                if host.tsc_deadline {
                    entry.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
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
            0x8000_0001 => entry.ecx &= !EXT1_ECX_SVM,
            SVM_FEATURES_LEAF => {
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
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

/// The brand string in `cpuid`'s leaves 0x8000_0002..=4, NULs trimmed.
fn brand(cpuid: &CpuId) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(BRAND_LEN);
    for leaf in BRAND_LEAVES {
        match cpuid.as_slice().iter().find(|e| e.function == leaf) {
            Some(e) => [e.eax, e.ebx, e.ecx, e.edx]
                .iter()
                .for_each(|r| bytes.extend_from_slice(&r.to_le_bytes())),
            None => return Vec::new(),
        }
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.truncate(end);
    bytes
}

/// Keeps the host's brand string, which KVM passes through, as Firecracker
/// does; where it is missing or blank, writes [`DEFAULT_BRAND`] and makes
/// sure the extended leaves reach it.
fn name_cpu(cpuid: &mut CpuId) {
    if !brand(cpuid).iter().all(|b| b.is_ascii_whitespace()) {
        return;
    }
    let mut name = [0u8; BRAND_LEN];
    name[..DEFAULT_BRAND.len()].copy_from_slice(DEFAULT_BRAND.as_bytes());
    let reg = |at: usize| u32::from_le_bytes([name[at], name[at + 1], name[at + 2], name[at + 3]]);
    let mut wanted: Vec<kvm_cpuid_entry2> = BRAND_LEAVES
        .enumerate()
        .map(|(i, function)| kvm_cpuid_entry2 {
            function,
            eax: reg(16 * i),
            ebx: reg(16 * i + 4),
            ecx: reg(16 * i + 8),
            edx: reg(16 * i + 12),
            ..Default::default()
        })
        .collect();
    wanted.push(kvm_cpuid_entry2 {
        function: EXTENDED_MAX_LEAF,
        eax: *BRAND_LEAVES.end(),
        ..Default::default()
    });
    for want in wanted {
        match cpuid
            .as_mut_slice()
            .iter_mut()
            .find(|e| e.function == want.function)
        {
            Some(e) if e.function == EXTENDED_MAX_LEAF => e.eax = e.eax.max(want.eax),
            Some(e) => *e = want,
            None => {
                if let Err(e) = cpuid.push(want) {
                    log::warn!("cannot add CPUID leaf {:#x}: {e:?}", want.function);
                }
            }
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
        filter(
            &mut cpuid,
            2,
            4,
            CpuidProfile::Host,
            HostFeatures::default(),
        );
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
        filter(
            &mut cpuid,
            0,
            1,
            CpuidProfile::Baseline,
            HostFeatures::default(),
        );
        let e = cpuid.as_slice();
        assert_eq!(
            e[0].ecx & (LEAF1_ECX_CX16 | LEAF1_ECX_XSAVE | LEAF1_ECX_AVX),
            0
        );
        assert_eq!(e[0].edx & LEAF1_EDX_HTT, 0, "single vCPU has no HTT");
        assert_eq!(e[2].ebx & LEAF7_EBX_AVX2, 0);
    }

    fn cleared(function: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ..Default::default()
        }
    }

    #[test]
    fn guests_get_no_hardware_virtualization() {
        let mut cpuid = CpuId::from_entries(&[
            cleared(0x1),
            cleared(0x8000_0001),
            cleared(SVM_FEATURES_LEAF),
        ])
        .expect("cpuid");
        for e in cpuid.as_mut_slice() {
            e.eax = u32::MAX;
            e.ebx = u32::MAX;
            e.ecx = u32::MAX;
            e.edx = u32::MAX;
        }
        filter(
            &mut cpuid,
            0,
            1,
            CpuidProfile::Host,
            HostFeatures::default(),
        );
        let get = |f: u32| {
            cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == f)
                .copied()
                .expect("leaf")
        };
        assert_eq!(get(0x1).ecx & LEAF1_ECX_VMX, 0, "VMX");
        assert_ne!(get(0x1).ecx & LEAF1_ECX_CX16, 0, "other bits stay");
        assert_eq!(get(0x8000_0001).ecx & EXT1_ECX_SVM, 0, "SVM");
        assert_ne!(get(0x8000_0001).ecx & !EXT1_ECX_SVM, 0, "other bits stay");
        let svm = get(SVM_FEATURES_LEAF);
        assert_eq!((svm.eax, svm.ebx, svm.ecx, svm.edx), (0, 0, 0, 0));
    }

    #[test]
    fn tsc_deadline_is_exposed_only_when_kvm_has_it() {
        for tsc_deadline in [false, true] {
            let mut cpuid = CpuId::from_entries(&[cleared(1)]).expect("cpuid");
            let host = HostFeatures { tsc_deadline };
            filter(&mut cpuid, 0, 1, CpuidProfile::Host, host);
            let ecx = cpuid.as_slice()[0].ecx;
            assert_eq!(ecx & LEAF1_ECX_TSC_DEADLINE != 0, tsc_deadline);
        }
    }

    /// Leaves 0x8000_0002..=4 holding `name`.
    fn brand_entries(name: &str) -> Vec<kvm_cpuid_entry2> {
        let mut bytes = [0u8; BRAND_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        let reg = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        (0..3)
            .map(|i| kvm_cpuid_entry2 {
                function: 0x8000_0002 + i as u32,
                eax: reg(16 * i),
                ebx: reg(16 * i + 4),
                ecx: reg(16 * i + 8),
                edx: reg(16 * i + 12),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn the_hosts_brand_string_is_kept() {
        let mut entries = vec![cleared(1), cleared(EXTENDED_MAX_LEAF)];
        entries[1].eax = 0x8000_0008;
        entries.extend(brand_entries("AMD EPYC"));
        let mut cpuid = CpuId::from_entries(&entries).expect("cpuid");
        filter(
            &mut cpuid,
            0,
            1,
            CpuidProfile::Host,
            HostFeatures::default(),
        );
        assert_eq!(brand(&cpuid), b"AMD EPYC");
        assert_eq!(cpuid.as_slice().len(), 5);
        assert_eq!(cpuid.as_slice()[1].eax, 0x8000_0008);
    }

    #[test]
    fn a_missing_or_blank_brand_string_becomes_keels() {
        let mut cpuid = CpuId::from_entries(&[cleared(1)]).expect("cpuid");
        filter(
            &mut cpuid,
            0,
            1,
            CpuidProfile::Host,
            HostFeatures::default(),
        );
        assert_eq!(brand(&cpuid), DEFAULT_BRAND.as_bytes());
        let max = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == EXTENDED_MAX_LEAF);
        assert_eq!(
            max.map(|e| e.eax),
            Some(0x8000_0004),
            "the leaves are reachable"
        );

        let mut entries = vec![cleared(EXTENDED_MAX_LEAF)];
        entries[0].eax = 0x8000_0001;
        entries.extend(brand_entries("    "));
        let mut cpuid = CpuId::from_entries(&entries).expect("cpuid");
        filter(
            &mut cpuid,
            0,
            1,
            CpuidProfile::Host,
            HostFeatures::default(),
        );
        assert_eq!(brand(&cpuid), DEFAULT_BRAND.as_bytes());
        assert_eq!(cpuid.as_slice().len(), 4, "rewritten in place");
        assert_eq!(cpuid.as_slice()[0].eax, 0x8000_0004);
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
