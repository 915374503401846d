"""The floor for the reaction latency: the least a Python process can do per RARP.

Run by bench_reply.py in the switch namespace, in place of the daemon:

    python3 echo_responder.py PORT SVI SVI_MAC SVI_IPV4

Blocks in recv() on a packet socket bound to PORT that the kernel filters to
incoming RARPs, and for each one sends a prebuilt-shape ARP request to the
announced MAC out of SVI. No netlink, no mirror, no engine, no log: what is left
is the kernel's path (veth, bridge, packet sockets), two process wake-ups and a
few Python bytecodes. The daemon's latency minus this one is what the daemon
itself adds.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from rarp_replay.packetsock import attach_filter

ETH_P_ALL = 0x0003
ETH_P_RARP = 0x8035


def rarp_in_filter() -> list[tuple[int, int, int, int]]:
    ld_pkttype, ldh_abs, jeq_k, ret_k = 0x20, 0x28, 0x15, 0x06
    skf_ad_pkttype = (-0x1000 + 4) & 0xFFFFFFFF
    return [
        (ld_pkttype, 0, 0, skf_ad_pkttype),  # A = pkt_type
        (jeq_k, 3, 0, 4),  # PACKET_OUTGOING -> drop
        (ldh_abs, 0, 0, 12),  # A = EtherType
        (jeq_k, 0, 1, ETH_P_RARP),
        (ret_k, 0, 0, 64),  # accept: the header and the ARP body are enough
        (ret_k, 0, 0, 0),  # drop
    ]


def main(argv: list[str]) -> int:
    port, svi, svi_mac_text, svi_ip_text = argv
    svi_mac = bytes.fromhex(svi_mac_text.replace(":", ""))
    svi_ip = ipaddress.IPv4Address(svi_ip_text).packed
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    attach_filter(rx, rarp_in_filter())
    rx.bind((port, ETH_P_ALL))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    tx.bind((svi, 0))
    # ARP request, Ethernet/IPv4, opcode 1, sender = the SVI; padded to 60 octets.
    body = b"\x08\x06\x00\x01\x08\x00\x06\x04\x00\x01" + svi_mac + svi_ip
    tpa_and_pad = bytes(4 + 18)  # target IP 0.0.0.0 (unused by the tap), 18 octets of padding
    print("ready", flush=True)
    while True:
        frame = rx.recv(64)
        mac = frame[32:38]  # RARP target hardware address: the announced MAC
        tx.send(mac + svi_mac + body + mac + tpa_and_pad)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
