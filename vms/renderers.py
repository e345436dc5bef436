"""``storage.cfg``, ``jobs.cfg`` and ``nodes/<node>/qemu-server/<vmid>.conf`` rendered from the models."""

from __future__ import annotations

from replicator.mirror import (
    Files,
    MirrorFile,
    register_object_renderer,
    register_tree_renderer,
)
from vms.models import VM, BackupJob, Storage
from vms.services.backup_jobs import job_values


def render_storage_cfg() -> Files:
    blocks: list[str] = []
    for storage in Storage.objects.using("cluster").all():
        block = [f"{storage.type}: {storage.storeid}", f"\tpath {storage.path}", f"\tcontent {storage.content}"]
        if storage.shared:
            block.append("\tshared 1")
        if storage.format:
            block.append(f"\tformat {storage.format}")
        if storage.nodes:
            block.append(f"\tnodes {storage.nodes}")
        if storage.disable:
            block.append("\tdisable")
        blocks.append("\n".join(block))
    return {"storage.cfg": MirrorFile("\n\n".join(blocks) + ("\n" if blocks else ""))}


def render_jobs_cfg() -> Files:
    """SectionConfig as Proxmox writes it: ``vzdump: <id>``, the comment first, then the keys sorted."""
    blocks: list[str] = []
    for job in BackupJob.objects.using("cluster").all():
        values = job_values(job)
        keys = (["comment"] if "comment" in values else []) + sorted(k for k in values if k != "comment")
        blocks.append("\n".join([f"vzdump: {job.jobid}", *(f"\t{key} {values[key]}" for key in keys)]))
    return {"jobs.cfg": MirrorFile("\n\n".join(blocks) + ("\n" if blocks else ""))}


def render_vm(vm: VM) -> Files:
    return {vm.config_path: MirrorFile(vm.config_text())}


register_tree_renderer(["vms.storage"], render_storage_cfg)
register_tree_renderer(["vms.backupjob"], render_jobs_cfg)
register_object_renderer("vms.vm", render_vm, cleanup_globs=["nodes/*/qemu-server/*.conf"])
