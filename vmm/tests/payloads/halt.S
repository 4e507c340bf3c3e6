# Halts with interrupts off: the guest sits in the kernel's halt until the
# VMM ends it. Linked at 1 MiB, entered in 32-bit protected mode.
        .code32
        .text
        .global _start
_start:
        cli
1:      hlt
        jmp     1b
