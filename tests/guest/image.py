"""The tiny test guest: a Debian kernel and an initramfs with busybox and qemu-ga, built locally.

Everything comes from Debian packages installed on this machine (``linux-image-amd64``,
``busybox-static``, ``qemu-guest-agent``; ``scripts/bootstrap.sh`` installs them): nothing is
downloaded. The initramfs holds busybox, qemu-ga with the libraries ``ldd`` names, the kernel
modules the guest needs (with their dependencies from ``modules.dep``, in load order) and the
files under ``rootfs/`` (the init script, the power-button handler, ``/sbin/shutdown``).

The result is cached in a directory keyed by the package versions and the builder's own files,
built once (under a file lock, so parallel sessions build it once) and reused afterwards.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOTFS = HERE / "rootfs"
PACKAGES = ("busybox-static", "qemu-guest-agent", "cpio")
# What the guest loads: the agent's virtio-serial port, a NIC, disks and a filesystem for them
# (fsfreeze needs a real one), the ACPI power button and the input events acpid reads.
MODULES = ("virtio_pci", "virtio_console", "virtio_net", "virtio_blk", "crc32c_generic", "ext4", "button", "evdev")
QEMU_GA = "/usr/sbin/qemu-ga"
BUSYBOX = "/bin/busybox"
READY = "PVE-TEST-GUEST: ready"


class GuestImageError(RuntimeError):
    """The guest cannot be built from what is installed (say which package is missing)."""


@dataclass(frozen=True)
class GuestImage:
    """A bootable guest: ``-kernel`` and ``-initrd`` paths, and the kernel's release (``uname -r``)."""

    kernel: Path
    initrd: Path
    kernel_release: str


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def package_version(package: str) -> str:
    """The installed version of a Debian package, or a GuestImageError naming it."""
    try:
        version = _run("dpkg-query", "-W", "-f=${Version}", package).strip()
    except subprocess.CalledProcessError:
        version = ""
    if not version:
        raise GuestImageError(f"Debian package {package} is not installed (run scripts/bootstrap.sh)")
    return version


def installed_kernel() -> str:
    """The newest Debian kernel with both its image in /boot and its modules in /lib/modules."""
    releases = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        release = vmlinuz.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / release / "modules.dep").exists():
            releases.append(release)
    if not releases:
        raise GuestImageError("no kernel with modules installed (Debian package linux-image-amd64)")

    def key(release: str) -> list[int]:
        return [int(part) for part in re.findall(r"\d+", release)]

    return max(releases, key=key)


def cache_key(release: str) -> str:
    """Changes whenever a package, the kernel or a file of this builder changes."""
    digest = hashlib.sha256()
    digest.update(release.encode())
    for package in (*PACKAGES, f"linux-image-{release}"):
        digest.update(f"{package}={package_version(package)}\n".encode())
    for path in sorted([Path(__file__), *(p for p in ROOTFS.rglob("*") if p.is_file())]):
        digest.update(str(path.relative_to(HERE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """``$PVE_TEST_GUEST_CACHE``, else ``$XDG_CACHE_HOME/pve-test-guest`` (``~/.cache`` by default)."""
    if os.environ.get("PVE_TEST_GUEST_CACHE"):
        return Path(os.environ["PVE_TEST_GUEST_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pve-test-guest"


def module_load_order(release: str, names: tuple[str, ...] = MODULES) -> list[str]:
    """Paths (relative to /lib/modules/<release>) of ``names`` and their dependencies, dependencies first."""
    root = Path("/lib/modules") / release
    deps: dict[str, list[str]] = {}
    for line in (root / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(path).name.split(".ko")[0].replace("-", "_"): path for path in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dependency in deps.get(path, []):
            visit(dependency)
        order.append(path)

    for name in names:
        if name not in by_name:
            builtin = (root / "modules.builtin").read_text()
            if f"/{name}.ko" in builtin:
                continue  # built into this kernel: nothing to load
            raise GuestImageError(f"kernel module {name} not found for {release}")
        visit(by_name[name])
    return order


def shared_libraries(binary: str) -> list[Path]:
    """The libraries ``ldd`` says ``binary`` needs (the dynamic loader included)."""
    libraries = []
    for line in _run("ldd", binary).splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            libraries.append(Path(match.group(1)))
    return libraries


def _copy(source: Path, root: Path, target: Path | None = None) -> None:
    """Copy ``source`` to the same path (or ``target``) under ``root``, following symlinks."""
    destination = root / (target or source).relative_to("/")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination, follow_symlinks=True)


def populate(root: Path, release: str) -> None:
    """Lay out the guest's root filesystem under ``root``."""
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "tmp", "etc", "root"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    _copy(Path(BUSYBOX), root)
    for applet in _run(BUSYBOX, "--list-full").split():
        link = root / applet
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    _copy(Path(QEMU_GA), root)
    for library in shared_libraries(QEMU_GA):
        _copy(library, root)
    order = module_load_order(release)
    for module in order:
        _copy(Path("/lib/modules") / release / module, root, Path("/lib/modules") / module)
    (root / "etc" / "modules.order").write_text("".join(f"{module}\n" for module in order))
    shutil.copytree(ROOTFS, root, dirs_exist_ok=True, symlinks=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "hostname").write_text("pve-test-guest\n")


def pack(root: Path, initrd: Path) -> None:
    """A gzip'd ``newc`` cpio archive of ``root`` (what the kernel unpacks as its initramfs)."""
    names = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    archive = subprocess.run(
        ["cpio", "--quiet", "-o", "-H", "newc", "--owner=0:0"],
        cwd=root,
        input="\n".join(names).encode(),
        capture_output=True,
        check=True,
    ).stdout
    with gzip.open(initrd, "wb", compresslevel=1) as handle:
        handle.write(archive)


def build_guest_image(cache: Path | None = None) -> GuestImage:
    """The cached guest for the installed packages, built first if it is not there yet."""
    release = installed_kernel()
    kernel = Path("/boot") / f"vmlinuz-{release}"
    directory = (cache or cache_root()) / cache_key(release)
    image = GuestImage(kernel=directory / "vmlinuz", initrd=directory / "initrd.gz", kernel_release=release)
    if image.initrd.exists() and image.kernel.exists():
        return image
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.initrd.exists() and image.kernel.exists():
            return image
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=directory.parent))
        try:
            populate(work / "root", release)
            pack(work / "root", work / "initrd.gz")
            shutil.copy2(kernel, work / "vmlinuz")
            shutil.rmtree(work / "root")
            os.rename(work, directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return image
