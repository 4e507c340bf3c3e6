# COUNT sequential virtio-blk requests of SEGS segments of 32 KiB each,
# reads (REQ=0) or writes (REQ=1), then power off. The disk must hold
# COUNT * SEGS * 32 KiB. Symbols come from `as --defsym`.
        .code32
        .set    MMIO, 0xd0000000
        .set    DESC, 0x10000
        .set    AVAIL, 0x11000
        .set    USED, 0x12000
        .set    HDR, 0x13000
        .set    STATUS, 0x15000
        .set    BUF, 0x400000
        .set    QSIZE, 256
        .text
        .global _start
_start:
        mov     $0x8000, %esp
        mov     $MMIO, %ebx
        movl    $1, 0x70(%ebx)
        movl    $3, 0x70(%ebx)
        movl    $1, 0x24(%ebx)
        movl    $1, 0x20(%ebx)
        movl    $0, 0x24(%ebx)
        movl    $0, 0x20(%ebx)
        movl    $0xb, 0x70(%ebx)
        movl    $0, 0x30(%ebx)
        movl    $QSIZE, 0x38(%ebx)
        movl    $DESC, 0x80(%ebx)
        movl    $0, 0x84(%ebx)
        movl    $AVAIL, 0x90(%ebx)
        movl    $0, 0x94(%ebx)
        movl    $USED, 0xa0(%ebx)
        movl    $0, 0xa4(%ebx)
        movl    $1, 0x44(%ebx)
        movl    $0xf, 0x70(%ebx)

        # Descriptor 0: header; 1..SEGS: 32 KiB segments; SEGS+1: status.
        movl    $HDR, DESC
        movl    $0, DESC + 4
        movl    $16, DESC + 8
        movw    $1, DESC + 12
        movw    $1, DESC + 14
        mov     $1, %ecx
        mov     $DESC + 16, %edi
        mov     $BUF, %eax
1:      movl    %eax, (%edi)
        movl    $0, 4(%edi)
        movl    $0x8000, 8(%edi)
        movw    $(1 | (2 * (1 - REQ))), 12(%edi)   # NEXT, plus WRITE for reads
        lea     1(%ecx), %edx
        movw    %dx, 14(%edi)
        add     $0x8000, %eax
        add     $16, %edi
        inc     %ecx
        cmp     $(SEGS + 1), %ecx
        jne     1b
        movl    $STATUS, (%edi)
        movl    $0, 4(%edi)
        movl    $1, 8(%edi)
        movw    $2, 12(%edi)
        movw    $0, 14(%edi)

        movl    $REQ, HDR
        movl    $0, HDR + 4
        xor     %esi, %esi              # request number
2:      cmp     $COUNT, %esi
        je      4f
        mov     %esi, %eax
        imul    $(SEGS * 64), %eax      # 64 sectors per 32 KiB segment
        movl    %eax, HDR + 8
        movl    $0, HDR + 12
        mov     %esi, %eax
        and     $(QSIZE - 1), %eax
        movw    $0, AVAIL + 4(,%eax,2)  # ring[i % QSIZE] = descriptor 0
        lea     1(%esi), %edx
        movw    %dx, AVAIL + 2          # avail.idx = i + 1
        movl    $0, 0x50(%ebx)
3:      cmpw    %dx, USED + 2
        jne     3b
        inc     %esi
        jmp     2b
4:      mov     $0x604, %dx
        mov     $0x3400, %ax
        out     %ax, %dx
5:      hlt
        jmp     5b
