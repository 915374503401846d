"""rarp-replay: make an EVPN-VXLAN fabric re-learn a migrated VM's MAC/IP.

A hypervisor announces a migrated VM with RARP (EtherType 0x8035).  The
daemon (`rarp-reply`) hears the RARP on the switch where the VM now lives,
finds the VM's addresses in the switch's neighbor tables by MAC, and probes
the VM with ARP and Neighbor Solicitation so the switch learns MAC+IP locally.
"""

__version__ = "0.1.0"
