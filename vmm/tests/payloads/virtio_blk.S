# Drives the first virtio-mmio device (a virtio-blk disk) by hand: feature
# negotiation, one 8-entry queue, a write of sector 0 then a read of
# sector 1. Prints the two status bytes as digits and the first 8 bytes
# read, then powers off. Linked at 1 MiB, entered in 32-bit protected mode.
        .code32
        .set    MMIO, 0xd0000000
        .set    DESC, 0x10000
        .set    AVAIL, 0x11000
        .set    USED, 0x12000
        .set    HDR, 0x13000
        .set    DATA, 0x14000
        .set    STATUS, 0x15000
        .set    DATA2, 0x16000
        .text
        .global _start
_start:
        mov     $0x8000, %esp
        mov     $MMIO, %ebx
        movl    $1, 0x70(%ebx)          # status: ACKNOWLEDGE
        movl    $3, 0x70(%ebx)          # status: DRIVER
        movl    $1, 0x24(%ebx)          # DriverFeaturesSel = 1
        movl    $1, 0x20(%ebx)          # VIRTIO_F_VERSION_1 (bit 32)
        movl    $0, 0x24(%ebx)
        movl    $0, 0x20(%ebx)
        movl    $0xb, 0x70(%ebx)        # status: FEATURES_OK
        movl    $0, 0x30(%ebx)          # QueueSel = 0
        movl    $8, 0x38(%ebx)          # QueueNum = 8
        movl    $DESC, 0x80(%ebx)
        movl    $0, 0x84(%ebx)
        movl    $AVAIL, 0x90(%ebx)
        movl    $0, 0x94(%ebx)
        movl    $USED, 0xa0(%ebx)
        movl    $0, 0xa4(%ebx)
        movl    $1, 0x44(%ebx)          # QueueReady
        movl    $0xf, 0x70(%ebx)        # status: DRIVER_OK

        # Sector 0 <- "KEELBLK!" repeated.
        mov     $DATA, %edi
        mov     $64, %ecx
1:      movl    $0x4c45454b, (%edi)     # "KEEL"
        movl    $0x214b4c42, 4(%edi)    # "BLK!"
        add     $8, %edi
        loop    1b
        movl    $1, HDR                 # VIRTIO_BLK_T_OUT
        movl    $0, HDR + 4
        movl    $0, HDR + 8             # sector 0
        movl    $0, HDR + 12
        call    chain
        movl    $0, AVAIL + 4           # ring[0] = descriptor 0, avail.flags = 0
        movw    $1, AVAIL + 2           # avail.idx = 1
        movl    $0, 0x50(%ebx)          # QueueNotify
2:      cmpw    $1, USED + 2
        jne     2b
        call    print_status

        # Sector 1 -> DATA2.
        movl    $0, HDR                 # VIRTIO_BLK_T_IN
        movl    $1, HDR + 8             # sector 1
        movl    $DATA2, DESC + 16       # descriptor 1 now points at DATA2
        movw    $3, DESC + 16 + 12      # NEXT | WRITE
        movw    $0, AVAIL + 6           # ring[1] = descriptor 0
        movw    $2, AVAIL + 2           # avail.idx = 2
        movl    $0, 0x50(%ebx)
3:      cmpw    $2, USED + 2
        jne     3b
        call    print_status
        mov     $DATA2, %esi
        mov     $8, %ecx
        mov     $0x3f8, %dx
4:      lodsb
        out     %al, %dx
        loop    4b
        mov     $'\n', %al
        out     %al, %dx
        mov     $0x604, %dx
        mov     $0x3400, %ax
        out     %ax, %dx
5:      hlt
        jmp     5b

# Descriptors: 0 = header (16 bytes), 1 = data (512), 2 = status (1, writable).
chain:  movl    $HDR, DESC
        movl    $0, DESC + 4
        movl    $16, DESC + 8
        movw    $1, DESC + 12           # NEXT
        movw    $1, DESC + 14
        movl    $DATA, DESC + 16
        movl    $0, DESC + 20
        movl    $512, DESC + 24
        movw    $1, DESC + 28           # NEXT (device reads the data)
        movw    $2, DESC + 30
        movl    $STATUS, DESC + 32
        movl    $0, DESC + 36
        movl    $1, DESC + 40
        movw    $2, DESC + 44           # WRITE
        movw    $0, DESC + 46
        movb    $0xff, STATUS
        ret

print_status:
        mov     STATUS, %al
        add     $'0', %al
        mov     $0x3f8, %dx
        out     %al, %dx
        movb    $0xff, STATUS
        ret
