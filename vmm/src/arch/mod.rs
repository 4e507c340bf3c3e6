//! x86_64 specifics: memory layout, boot protocols, ACPI, CPUID and the
//! initial vCPU state.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod regs;
