#!/usr/bin/env bash
# Build the `trixie` guest root filesystem for tests/vm/runner.py (Debian 13 from Debian's
# registry, with the project's test dependencies in a venv). Called by the runner as root:
#   build-trixie.sh ROOTDIR WHEELHOUSE
# ROOTDIR must not exist; WHEELHOUSE holds the wheels the runner downloaded with the host's
# pip for CPython 3.13 (so the chroot needs no network access of its own for PyPI).
# The runner keys its cache on a hash of this file and of the wheel list: edit it and the
# image is rebuilt. The trixie apt sources exist only inside this image, never on the host.
set -euo pipefail
root=$1
wheelhouse=$2
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security

# What the tests run in the guest: ip/bridge (iproute2), sysctl (procps), capsh (libcap2-bin),
# setpriv (util-linux), tcpdump, FRR's daemons and vtysh, modprobe (kmod) for the kernel's
# modules (team, vrf, bonding, ...), and the kernel itself (its vmlinuz and modules are
# booted from this tree). Its modules are shipped xz-compressed; virtme-ng copies the ones
# its initramfs needs (virtio, 9p, overlay) and loads them with busybox's insmod, which
# cannot decompress ("Invalid ELF header magic" and no root filesystem): so they are
# decompressed here, and modules.dep regenerated (image ~900 MB instead of ~450). man-db:
# test_systemd.py (the `systemd` image) checks the package's man pages with `man -w`.
packages=(
    linux-image-amd64 kmod
    frr iproute2 procps libcap2-bin util-linux tcpdump iputils-ping
    python3 python3-venv
    man-db
)

# --variant=apt: only Essential, apt and what is listed (no recommends), ~1 GB smaller
# than a standard system. Hooks run after the packages are installed.
mmdebstrap --variant=apt --include="$(IFS=,; echo "${packages[*]}")" \
    --customize-hook='mkdir -p "$1/rarp-replay" "$1/opt/wheelhouse"' \
    --customize-hook="cp -a '$wheelhouse'/. \"\$1/opt/wheelhouse/\"" \
    --customize-hook='chroot "$1" python3 -m venv /opt/rarp-replay-venv' \
    --customize-hook='chroot "$1" /opt/rarp-replay-venv/bin/pip install -q --no-index --find-links /opt/wheelhouse -r /opt/wheelhouse/requirements.txt' \
    --customize-hook='rm -rf "$1/opt/wheelhouse"' \
    --customize-hook='site=$(chroot "$1" /opt/rarp-replay-venv/bin/python -c "import sysconfig; print(sysconfig.get_path(\"purelib\"))"); echo /rarp-replay/src > "$1$site/rarp_replay_src.pth"' \
    --customize-hook='for d in "$1"/usr/lib/modules/*; do find "$d" -name "*.ko.xz" -print0 | xargs -0 -r -P 2 -n 64 xz -d; chroot "$1" depmod -a "${d##*/}"; done' \
    --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
    trixie "$root" \
    "deb $mirror trixie main" \
    "deb $mirror trixie-updates main" \
    "deb $security trixie-security main"
