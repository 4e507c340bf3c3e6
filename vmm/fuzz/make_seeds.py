#!/usr/bin/env python3
"""Writes the seed inputs under seeds/<target>/: small, valid driver
sessions (working chains, a full initialisation) the fuzzer mutates from.
The input format is described in src/lib.rs and each target's docs.

    vmm/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ALL_FEATURES = struct.pack("<Q", (1 << 64) - 1)

# Op tags (src/lib.rs).
CHAIN, WRITE_MEM, AVAIL_IDX, AVAIL_FLAGS, RAW_DESC = 0, 1, 2, 3, 4
KICK, RESET, ACTIVATE, READ_CONFIG, WRITE_CONFIG = 5, 6, 7, 8, 9
DEVICE_OPS = 10
R, W = 0, 1


def desc(offset, length, writable=False, fill=b""):
    """One descriptor in the data area at `offset`, filled with `fill`."""
    ctl = (1 if writable else 0) | (2 if fill else 0)
    out = struct.pack("<BIH", ctl, offset, length)
    if fill:
        out += struct.pack("<B", len(fill)) + fill
    return out


def chain(queue, *descs):
    return struct.pack("<BBB", CHAIN, queue, len(descs) - 1) + b"".join(descs)


def kick(queue):
    return struct.pack("<BB", KICK, queue)


def write(target, name, data):
    path = os.path.join(HERE, "seeds", target)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def block():
    setup = b"\x00" + b"\x04" + ALL_FEATURES  # read-write, 16 entries

    def request(kind, sector, data_desc):
        hdr = struct.pack("<IIQ", kind, 0, sector)
        return chain(0, desc(0, 16, fill=hdr), *data_desc, desc(0x3000, 1, W))

    read = request(0, 1, [desc(0x1000, 512, W)])
    write_ = request(1, 2, [desc(0x1000, 512, fill=b"keel" * 16)])
    flush = request(4, 0, [])
    get_id = request(8, 0, [desc(0x1000, 20, W)])
    write("virtio_block", "read", setup + read + kick(0))
    write("virtio_block", "write_read", setup + write_ + kick(0) + read + kick(0))
    write("virtio_block", "flush_id_reset", setup + flush + get_id + kick(0)
          + bytes([RESET, ACTIVATE]) + read + kick(0))
    write("virtio_block", "read_only_write", b"\x01" + setup[1:] + write_ + kick(0))
    write("virtio_block", "two_segments", setup + request(
        0, 0, [desc(0x1000, 512, W), desc(0x3_8000, 0x9000, W)]) + kick(0))


def net():
    setup = b"\x00" + b"\x04\x04" + ALL_FEATURES
    frame = b"\x00" * 12 + b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00" + b"x" * 46
    tx = chain(1, desc(0x100, len(frame), fill=frame)) + kick(1)
    tx_split = chain(1, desc(0x100, 12, fill=frame[:12]),
                     desc(0x200, len(frame) - 12, fill=frame[12:])) + kick(1)
    rx_bufs = chain(0, desc(0x1000, 2048, W)) + chain(0, desc(0x2000, 2048, W))
    to_guest = struct.pack("<BB", DEVICE_OPS, len(frame)) + frame
    event = bytes([DEVICE_OPS + 1])
    write("virtio_net", "tx", setup + tx)
    write("virtio_net", "tx_split", setup + tx_split)
    write("virtio_net", "rx", setup + rx_bufs + kick(0) + to_guest + event)
    write("virtio_net", "rx_wait", setup + to_guest + event + rx_bufs + kick(0))
    write("virtio_net", "both_reset", b"\x02" + setup[1:] + rx_bufs + kick(0) + tx
          + to_guest + event + bytes([RESET, ACTIVATE]) + rx_bufs + kick(0) + tx)


def vsock():
    setup = b"\x04\x04\x04" + ALL_FEATURES

    def packet(op, payload=b"", src_port=5000, dst_port=1024):
        hdr = struct.pack("<QQIIIHHIII", 3, 2, src_port, dst_port, len(payload),
                          1, op, 0, 65536, 0)
        return hdr + payload

    def tx(slot, pkt):
        return chain(1, desc(0x100 * slot, len(pkt), fill=pkt)) + kick(1)

    rx_bufs = b"".join(chain(0, desc(0x1_0000 + 0x2000 * i, 44 + 4096, W)) for i in range(3))
    rx_bufs += kick(0)
    accept, write_host, poll = DEVICE_OPS + 3, DEVICE_OPS + 1, DEVICE_OPS + 4
    host_write = struct.pack("<BBB", write_host, 0, 5) + b"hello"
    connect = tx(0, packet(1))
    send = tx(1, packet(5, b"ping"))
    write("virtio_vsock", "guest_connect", setup + rx_bufs + connect + bytes([accept, poll]))
    write("virtio_vsock", "guest_stream", setup + rx_bufs + connect + bytes([accept, poll])
          + send + host_write + bytes([poll]) + tx(2, packet(4)) + tx(3, packet(3)))
    write("virtio_vsock", "host_connect", setup + rx_bufs
          + struct.pack("<BB", DEVICE_OPS, 0) + bytes([poll])
          + tx(0, packet(2, b"", 1024, 1024)) + bytes([poll]))
    write("virtio_vsock", "reset_mid_stream", setup + rx_bufs + connect + bytes([accept, poll])
          + send + bytes([RESET, ACTIVATE]) + rx_bufs + connect)


def mmio():
    setup = b"\x04" + ALL_FEATURES
    reg_read, reg_write, status_step = DEVICE_OPS, DEVICE_OPS + 1, DEVICE_OPS + 2
    rx = chain(0, desc(0x1000, 64, W)) + chain(0, desc(0x2000, 16, W))
    probe = b"".join(struct.pack("<BHB", reg_read, off, 2) for off in (0, 4, 8, 0xc, 0x34, 0x70))
    write("mmio_transport", "activate_kick", setup + bytes([ACTIVATE]) + rx + kick(0))
    write("mmio_transport", "notify_register", setup + rx + bytes([ACTIVATE]) + kick(0x80))
    write("mmio_transport", "probe_reset", setup + probe + bytes([ACTIVATE]) + rx + kick(0)
          + bytes([RESET]) + probe + bytes([ACTIVATE]) + rx + kick(0x80))
    write("mmio_transport", "status_steps", setup
          + b"".join(struct.pack("<BB", status_step, i) for i in range(5))
          + struct.pack("<BHBQ", reg_write, 0x64, 2, 1)
          + struct.pack("<BBB", READ_CONFIG, 0, 3))


# Size selectors (src/pci.rs SIZES).
B1, B2, B4, B8, B3 = 0, 1, 2, 3, 7


def pci_config():
    address, io_read, io_write, ecam_read, ecam_write = 0, 1, 2, 3, 4
    bar_size, bar_move, absent = 5, 6, 7

    def select(dev, reg, fn=0, flags=0):
        return struct.pack("<BBBB", address, dev << 3 | fn, reg, flags)

    def ecam(dev, reg, sel, fn=0):
        return struct.pack("<BBHB", ecam_read, dev << 3 | fn, reg, sel)

    enumerate_ = b"".join(select(d, 0) + struct.pack("<BBB", io_read, 4, B4)
                          + ecam(d, 0, B2) + ecam(d, 8, B4) for d in range(4))
    caps = select(1, 0x34) + struct.pack("<BBB", io_read, 4, B1) + b"".join(
        ecam(1, off, B4) for off in range(0x40, 0x80, 4))
    sizing = b"".join(struct.pack("<BBB", bar_size, 1, bar) for bar in range(6))
    moves = (struct.pack("<BBBBQ", bar_move, 1, 0, 0, 0x2_0000_0000)
             + struct.pack("<BBBBQ", bar_move, 1, 0, 1, 0x3_0000_8000)
             + struct.pack("<BBBBQ", bar_move, 2, 0, 0, 0x1_0000_0000))
    command = (struct.pack("<BBHBQ", ecam_write, 1 << 3, 4, B2, 6)
               + select(1, 4) + struct.pack("<BBBQ", io_write, 4, B2, 6))
    linux_probe = (struct.pack("<BBBQ", io_write, 3, B1, 1)
                   + struct.pack("<BBBQ", io_write, 0, B4, 0x8000_0000)
                   + struct.pack("<BBB", io_read, 0, B4))
    absents = b"".join(struct.pack("<BBB", absent, d, f)
                       for d, f in ((0, 1), (1, 7), (2, 0), (3, 0), (31, 7)))
    write("pci_config", "enumerate", b"\x00" + linux_probe + enumerate_ + caps)
    write("pci_config", "two_functions", b"\x01" + enumerate_ + absents)
    write("pci_config", "bar_size_move", b"\x01" + sizing + moves + command + sizing)
    write("pci_config", "odd_accesses", b"\x00" + select(1, 0x10, flags=2)
          + struct.pack("<BBB", io_read, 6, B4) + struct.pack("<BBB", io_read, 4, B8)
          + ecam(1, 0x8000, B4) + ecam(1, 1, B2) + ecam(1, 0, B3) + absents)


def pci_transport():
    setup = b"\x04" + ALL_FEATURES
    bar_read, bar_write, status_step = DEVICE_OPS, DEVICE_OPS + 1, DEVICE_OPS + 2
    msix_control, command, vector_entry = DEVICE_OPS + 5, DEVICE_OPS + 6, DEVICE_OPS + 7
    rx = chain(0, desc(0x1000, 64, W)) + chain(0, desc(0x2000, 16, W))
    probe = b"".join(struct.pack("<BHB", bar_read, off, sel) for off, sel in (
        (0x00, B4), (0x04, B4), (0x12, B2), (0x14, B1), (0x18, B2), (0x1a, B2),
        (0x1e, B2), (0x1000, B1), (0x4000, B8), (0x5000, B8)))
    config = b"".join(struct.pack("<BHB", DEVICE_OPS + 3, off, B4)
                      for off in (0, 4, 8, 0x10, 0x34, 0x40, 0x50, 0x60, 0x70, 0x80))
    write("pci_transport", "activate_kick", setup + bytes([ACTIVATE, 0]) + rx + kick(0))
    write("pci_transport", "msix_kick", setup + bytes([ACTIVATE, 1]) + rx + kick(0x80))
    write("pci_transport", "probe_reset", setup + config + probe + bytes([ACTIVATE, 1]) + rx
          + kick(0) + bytes([RESET]) + probe + bytes([ACTIVATE, 0]) + rx + kick(0x80))
    write("pci_transport", "masked_vector", setup + bytes([ACTIVATE, 1])
          + struct.pack("<BBB", vector_entry, 1, 1) + rx + kick(0) + probe
          + struct.pack("<BBB", vector_entry, 1, 0) + struct.pack("<BB", msix_control, 3)
          + rx + kick(0) + struct.pack("<BB", msix_control, 1))
    write("pci_transport", "status_steps", setup
          + struct.pack("<BH", command, 0x406)
          + b"".join(struct.pack("<BB", status_step, i) for i in range(5))
          + struct.pack("<BHBQ", bar_write, 0x16, B2, 1)
          + struct.pack("<BHBQ", bar_write, 0x1a, B2, 0)
          + struct.pack("<BBB", READ_CONFIG, 0, B8))


block()
net()
vsock()
mmio()
pci_config()
pci_transport()
