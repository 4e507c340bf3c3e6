# Pulses the CPU reset line through the i8042 (command 0xFE on port 0x64),
# as Linux's reboot=k does.
        .code32
        .text
        .global _start
_start:
        mov     $0xfe, %al
        out     %al, $0x64
1:      hlt
        jmp     1b
