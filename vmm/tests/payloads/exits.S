# COUNT port writes to an unmapped port (each one a full exit to the VMM
# and back), then power off. COUNT comes from `as --defsym COUNT=n`.
        .code32
        .text
        .global _start
_start:
        mov     $COUNT, %ecx
        test    %ecx, %ecx
        jz      2f
1:      out     %al, $0x81
        loop    1b
2:      mov     $0x604, %dx
        mov     $0x3400, %ax
        out     %ax, %dx
3:      hlt
        jmp     3b
