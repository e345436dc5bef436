#!/usr/bin/env bash
# Install what a node and the test suite need, and only what is missing:
#   1. Debian packages (checked with dpkg-query; `apt-get update` at most once, and only when
#      something is missing; non-interactive, for root on Debian 12 with no TTY);
#   2. the Python virtual environment .venv, whose requirements are (re)installed only when
#      requirements*.txt changed (a checksum stamp in .venv).
# Idempotent and silent when everything is present. Starts and stops no system service.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  python3-venv openssl procps iproute2      # venv, key material tools, pgrep/ps, ip
  redis-server                              # the private Celery broker / Channels layer of a node
  corosync libcpg4 libquorum5 libvotequorum8 libcmap4 libcfg7   # membership, CPG (via ctypes)
  corosync-qdevice corosync-qnetd           # QDevice: the third vote of a two-node cluster (and its lab arbiter)
  qemu-system-x86 qemu-utils ipxe-qemu      # VMs, disk images, NIC option ROMs (a Recommends)
  zstd                                      # vzdump archives (.tar.zst)
  libnbd-bin                                # nbdcopy: a running VM's fleeced disks streamed into its backup
  ovmf                                      # UEFI firmware for `bios: ovmf` VMs (OVMF_CODE/OVMF_VARS)
  btrfs-progs                               # the btrfs storage plugin (subvolumes, snapshots; tests on a loop device)
  openssh-server                            # node-to-node channel
  libldap2-dev libsasl2-dev                 # to build python-ldap (LDAP realms)
  slapd ldap-utils                          # a real OpenLDAP server for the LDAP realm tests
  samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind  # an AD DC for the AD tests
  strace                                    # the fsync-before-acknowledgement test traces the replicators
  linux-image-amd64 busybox-static qemu-guest-agent cpio   # the tiny test guest (kernel, busybox, qemu-ga in an initramfs)
)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}; run this as root (or install them)" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for a concurrent apt/dpkg (another bootstrap, say) instead of failing on its lock.
  lock=(-o DPkg::Lock::Timeout=900)
  apt-get "${lock[@]}" update -qq
  apt-get "${lock[@]}" install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "bootstrap: installing Python requirements"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi
