# Writes "KEEL\n" to COM1, then powers off through ACPI PM1a control
# (SLP_TYP = 5 | SLP_EN). Linked at 1 MiB, entered in 32-bit protected mode.
        .code32
        .text
        .global _start
_start:
        mov     $msg, %esi
        mov     $msg_end - msg, %ecx
        mov     $0x3f8, %dx
1:      lodsb
        out     %al, %dx
        loop    1b
        mov     $0x604, %dx
        mov     $0x3400, %ax
        out     %ax, %dx
2:      hlt
        jmp     2b
msg:    .ascii  "KEEL\n"
msg_end:
