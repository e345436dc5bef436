"""vms.qemu.command: each config key's QEMU arguments, and the refusals (pure: no QEMU, no Django state)."""

from __future__ import annotations

import pytest

from vms.qemu.command import CommandError, Host, build_command, resolve_machine

KVM = Host(kvm=True, qemu_version="7.2.22", vhost_net=True)
TCG = Host(kvm=False, qemu_version="7.2.22")


def resolve(volid: str) -> tuple[str, str]:
    name = volid.partition(":")[2]
    return f"/store/{name}", "qcow2" if name.endswith(".qcow2") else "raw"


def argv(config: dict[str, str], host: Host = KVM, vmid: int = 100) -> list[str]:
    return build_command(
        vmid, config, host=host, files=lambda kind: f"/run/qs/{vmid}.{kind}", resolve=resolve, temp_efivars="/run/ev"
    )


def pairs(args: list[str]) -> list[tuple[str, str]]:
    """(option, value) pairs of an argv (options without a value get '')."""
    out, i = [], 1
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("-"):
            out.append((args[i], args[i + 1]))
            i += 2
        else:
            out.append((args[i], ""))
            i += 1
    return out


def values(args: list[str], option: str) -> list[str]:
    return [value for key, value in pairs(args) if key == option]


def test_runtime_contract_files_and_daemon():
    args = argv({"name": "web1"})
    assert values(args, "-qmp") == ["unix:/run/qs/100.qmp,server=on,wait=off"]
    assert values(args, "-pidfile") == ["/run/qs/100.pid"]
    assert values(args, "-vnc") == ["unix:/run/qs/100.vnc,password=on"]
    assert "-daemonize" in args and "-nodefaults" in args
    assert values(args, "-name") == ["web1,debug-threads=on"]


def test_kvm_or_tcg():
    assert values(argv({}), "-machine") == ["type=pc-i440fx-7.2,accel=kvm"]
    assert values(argv({}, TCG), "-machine") == ["type=pc-i440fx-7.2,accel=tcg"]
    assert values(argv({"kvm": "0"}), "-machine") == ["type=pc-i440fx-7.2,accel=tcg"]
    assert values(argv({"acpi": "0"}), "-machine") == ["type=pc-i440fx-7.2,accel=kvm,acpi=off"]
    assert "kvm-pit.lost_tick_policy=discard" in values(argv({}), "-global")
    assert values(argv({}, TCG), "-global") == []


def test_machine_versions_and_windows_pinning():
    assert resolve_machine({"machine": "q35"}, "7.2.22") == "pc-q35-7.2"
    assert resolve_machine({"machine": "pc-i440fx-6.2"}, "7.2.22") == "pc-i440fx-6.2"
    assert resolve_machine({"machine": "pc-q35-6.0+pve0"}, "7.2.22") == "pc-q35-6.0"
    assert resolve_machine({"ostype": "win10"}, "7.2.22") == "pc-i440fx-5.1"  # qemu-server's Windows pin
    created = {"ostype": "win11", "machine": "q35", "meta": "creation-qemu=9.2.0,ctime=1700000000"}
    assert resolve_machine(created, "9.2.0") == "pc-q35-9.2"
    with pytest.raises(CommandError, match="newer than"):
        resolve_machine({"machine": "pc-i440fx-9.0"}, "7.2.22")
    with pytest.raises(CommandError, match="unsupported machine"):
        resolve_machine({"machine": "microvm"}, "7.2.22")
    with pytest.raises(CommandError, match="viommu"):
        resolve_machine({"machine": "q35,viommu=intel"}, "7.2.22")


def test_cpu_topology_model_and_flags():
    args = argv({"sockets": "2", "cores": "3", "vcpus": "4", "cpu": "host,flags=+pcid;-md-clear"})
    assert values(args, "-smp") == ["4,sockets=2,cores=3,maxcpus=6"]
    assert values(args, "-cpu") == ["host,+kvm_pv_unhalt,+kvm_pv_eoi,+pcid,-md-clear"]
    assert values(argv({}), "-cpu") == ["kvm64,+lahf_lm,+sep,+kvm_pv_unhalt,+kvm_pv_eoi"]
    assert values(argv({}, TCG), "-cpu") == ["qemu64,+lahf_lm,+sep"]
    level = values(argv({"cpu": "x86-64-v2-AES"}), "-cpu")[0]
    assert level.startswith("qemu64,") and "+aes" in level and "+sse4.2" in level
    assert "hv_relaxed" in values(argv({"ostype": "win10"}), "-cpu")[0]
    for bad, message in (
        ({"cpu": "host"}, "needs KVM"),
        ({"cpu": "kvm64,flags=+vmx"}, "not allowed"),
        ({"cpu": "Frobnicator"}, "unknown CPU model"),
        ({"sockets": "1", "cores": "2", "vcpus": "3"}, "more than sockets"),
    ):
        with pytest.raises(CommandError, match=message):
            argv(bad, TCG)


def test_memory_balloon_and_numa():
    args = argv({"memory": "2048"})
    assert values(args, "-m") == ["2048"]
    assert "virtio-balloon-pci,id=balloon0,free-page-reporting=on" in values(args, "-device")
    assert not any("balloon" in d for d in values(argv({"memory": "2048", "balloon": "0"}), "-device"))
    numa = argv({"memory": "2048", "sockets": "2", "cores": "2", "numa": "1"})
    assert values(numa, "-numa") == [
        "node,nodeid=0,cpus=0-1,memdev=ram-node0",
        "node,nodeid=1,cpus=2-3,memdev=ram-node1",
    ]
    with pytest.raises(CommandError, match="more than memory"):
        argv({"memory": "1024", "balloon": "2048"})


def test_bios_ovmf_with_and_without_efidisk():
    args = argv({"bios": "ovmf", "efidisk0": "local:100/vm-100-disk-1.qcow2,efitype=4m,pre-enrolled-keys=1,size=528K"})
    drives = values(args, "-drive")
    assert "if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" in drives
    assert "if=pflash,unit=1,id=drive-efidisk0,format=qcow2,file=/store/100/vm-100-disk-1.qcow2" in drives
    temporary = values(argv({"bios": "ovmf"}), "-drive")
    assert temporary[1] == "if=pflash,unit=1,id=drive-efidisk0,format=raw,file=/run/ev"
    with pytest.raises(CommandError, match="needs bios: ovmf"):
        argv({"efidisk0": "local:100/vm-100-disk-1.raw"})


def test_scsi_controllers_and_drive_options():
    config = {
        "scsihw": "virtio-scsi-single",
        "scsi0": "local:100/vm-100-disk-0.qcow2,cache=writeback,discard=on,iothread=1,ssd=1,serial=DISK0,aio=threads",
    }
    args = argv(config)
    assert "virtio-scsi-pci,id=virtioscsi0,iothread=iothread-virtioscsi0" in values(args, "-device")
    assert values(args, "-object") == ["iothread,id=iothread-virtioscsi0"]
    assert values(args, "-drive") == [
        "file=/store/100/vm-100-disk-0.qcow2,if=none,id=drive-scsi0,format=qcow2,cache=writeback,discard=unmap,aio=threads"
    ]
    device = next(d for d in values(args, "-device") if "drive=drive-scsi0" in d)
    assert device.startswith("scsi-hd,bus=virtioscsi0.0,channel=0,scsi-id=0,lun=0,")
    assert "serial=DISK0" in device and "rotation_rate=1" in device
    lsi = argv({"scsi8": "local:100/vm-100-disk-0.raw"})
    assert "lsi,id=scsihw1" in values(lsi, "-device")
    assert any(d.startswith("scsi-hd,bus=scsihw1.0,scsi-id=1,") for d in values(lsi, "-device"))
    with pytest.raises(CommandError, match="virtio-scsi-single"):
        argv({"scsihw": "lsi", "scsi0": "local:100/vm-100-disk-0.raw,iothread=1"})


def test_ide_sata_virtio_and_cdrom():
    config = {
        "ide2": "local:iso/debian.iso,media=cdrom",
        "ide0": "none,media=cdrom",
        "sata1": "local:100/vm-100-disk-1.raw",
        "virtio0": "local:100/vm-100-disk-2.raw,iothread=1,mbps_rd=10,iops_wr_max=200",
    }
    args = argv(config)
    drives = values(args, "-drive")
    assert "file=/store/iso/debian.iso,if=none,id=drive-ide2,format=raw,media=cdrom,readonly=on" in drives
    assert "if=none,id=drive-ide0,media=cdrom" in drives
    assert any("throttling.bps-read=10485760" in d and "throttling.iops-write-max=200" in d for d in drives)
    devices = values(args, "-device")
    assert "ide-cd,bus=ide.1,unit=0,drive=drive-ide2,id=ide2" in [d.split(",bootindex")[0] for d in devices]
    assert "ahci,id=ahci0,multifunction=on" in devices
    assert any(d.startswith("ide-hd,bus=ahci0.1,drive=drive-sata1,id=sata1") for d in devices)
    assert any(d.startswith("virtio-blk-pci,iothread=iothread-virtio0,drive=drive-virtio0") for d in devices)
    for bad, message in (
        ({"ide2": "local:100/vm-100-disk-0.raw,media=cdrom"}, "must hold an ISO"),
        ({"scsi0": "local:iso/x.iso"}, "not a disk image"),
        ({"scsi0": "local:4"}, "not allocated"),
        ({"scsi0": "none"}, "only a CD-ROM"),
        ({"virtio0": "local:100/vm-100-disk-0.raw,ssd=1"}, "ssd emulation"),
        ({"scsi0": "local:100/vm-100-disk-0.raw,aio=native,cache=writeback"}, "aio=native"),
    ):
        with pytest.raises(CommandError, match=message):
            argv(bad)


def test_q35_layout():
    args = argv({"machine": "q35", "ide1": "local:iso/d.iso,media=cdrom", "usb0": "host=1234:5678"})
    devices = values(args, "-device")
    assert any(d.startswith("ide-cd,bus=ide.1,unit=0,drive=drive-ide1") for d in devices)
    assert devices.count("qemu-xhci,p2=15,p3=15,id=xhci") == 1
    assert "usb-tablet,id=tablet,bus=xhci.0,port=15" in devices
    assert "usb-host,bus=xhci.0,port=1,vendorid=0x1234,productid=0x5678,id=usb0" in devices


def test_boot_order():
    config = {
        "scsi0": "local:100/vm-100-disk-0.raw",
        "ide2": "local:iso/d.iso,media=cdrom",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
        "boot": "order=ide2;scsi0;net0",
    }
    devices = values(argv(config), "-device")
    assert any("id=ide2,bootindex=100" in d for d in devices)
    assert any("id=scsi0,bootindex=101" in d for d in devices)
    assert any("id=net0,bootindex=102" in d for d in devices)
    legacy = values(argv({**config, "boot": "dc"}), "-device")
    assert any("id=ide2,bootindex=100" in d for d in legacy) and any("id=scsi0,bootindex=101" in d for d in legacy)
    with pytest.raises(CommandError, match="not a configured device"):
        argv({**config, "boot": "order=virtio3"})


def test_network_devices():
    args = argv(
        {"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=0,queues=2", "net1": "e1000=BC:24:11:00:00:02"}
    )
    assert values(args, "-netdev") == [
        "type=tap,id=net0,ifname=tap100i0,script=no,downscript=no,vhost=on,queues=2",
        "type=user,id=net1",
    ]
    devices = values(args, "-device")
    assert "virtio-net-pci,mac=BC:24:11:00:00:01,netdev=net0,id=net0,mq=on,vectors=6,bootindex=100" in devices
    assert "e1000,mac=BC:24:11:00:00:02,netdev=net1,id=net1,bootindex=101" in devices
    for bad, message in (
        ({"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1"}, "firewall"),
        ({"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,rate=10"}, "rate"),
        ({"net0": "e1000=BC:24:11:00:00:01,queues=4"}, "multiqueue"),
    ):
        with pytest.raises(CommandError, match=message):
            argv(bad)


def test_display_serial_agent_tablet_smbios():
    args = argv({"vga": "std,memory=32", "serial0": "socket", "agent": "1,fstrim_cloned_disks=1", "tablet": "1"})
    devices = values(args, "-device")
    assert "VGA,id=vga,vgamem_mb=32" in devices
    assert "socket,id=serial0,path=/run/qs/100.serial0,server=on,wait=off" in values(args, "-chardev")
    assert "isa-serial,chardev=serial0" in devices
    assert "socket,path=/run/qs/100.qga,server=on,wait=off,id=qga0" in values(args, "-chardev")
    assert "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0" in devices
    assert "usb-tablet,id=tablet,bus=uhci.0,port=1" in devices
    assert not any("tablet" in d for d in values(argv({"tablet": "0"}), "-device"))
    assert not any("qga" in c for c in values(argv({"agent": "0"}), "-chardev"))
    assert values(argv({"vga": "none"}), "-device")[0].startswith("virtio-balloon")
    uuid = "5e3d2b6a-1234-4bcd-8abc-0123456789ab"
    assert values(argv({"smbios1": f"uuid={uuid},manufacturer=QUNNRQ==,base64=1"}), "-smbios") == [
        f"type=1,uuid={uuid},manufacturer=ACME"
    ]
    for bad, message in (
        ({"vga": "qxl"}, "SPICE"),
        ({"smbios1": "uuid=5e3d2b6a-1234-4bcd-8abc-0123456789ab,manufacturer=YSxi,base64=1"}, "may only hold"),
        ({"vga": "serial1"}, "needs a configured serial1"),
    ):
        with pytest.raises(CommandError, match=message):
            argv(bad)


def test_non_qemu_keys_add_nothing_and_unsupported_ones_are_refused():
    base = argv({})
    quiet = {"description": "x", "tags": "a", "onboot": "1", "startup": "order=1", "protection": "1", "shares": "10"}
    assert argv(quiet) == base
    for bad, message in (
        ({"hostpci0": "0000:01:00.0"}, "PCI passthrough"),
        ({"hookscript": "local:snippets/h.sh"}, "hookscripts"),
        ({"tpmstate0": "local:100/vm-100-disk-9.raw"}, "swtpm"),
        ({"cpulimit": "2"}, "cpulimit"),
        ({"frobnicate": "1"}, "unknown configuration key"),
        ({"memory": "1e3"}, "memory"),
        ({"name": "a,b"}, "name"),
    ):
        with pytest.raises(CommandError, match=message):
            argv(bad)


def test_args_is_split_not_interpreted():
    args = argv({"args": "-device 'virtio-rng-pci,id=rng0' -no-reboot"})
    assert args[-3:] == ["-device", "virtio-rng-pci,id=rng0", "-no-reboot"]
    with pytest.raises(CommandError, match="args"):
        argv({"args": "-device 'unterminated"})
