"""Admin for storages and VM configurations."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from portal.admin import AuditedModelAdmin
from vms.models import VM, Storage


@admin.register(Storage)
class StorageAdmin(AuditedModelAdmin):
    acl_root, acl_object = "/storage", "/storage/{storeid}"
    acl_view, acl_change = ("Datastore.Audit",), ("Datastore.Allocate",)
    list_display = ("storeid", "type", "path", "content", "shared", "nodes", "disable")


class VMForm(forms.ModelForm):
    """The config is edited as Proxmox writes it: ``key: value`` lines."""

    config_text = forms.CharField(
        label="Configuration",
        widget=forms.Textarea(attrs={"rows": 16, "cols": 80}),
        required=False,
        help_text="One 'key: value' per line, as in qemu-server/<vmid>.conf.",
    )

    class Meta:
        model = VM
        fields = ("vmid", "node", "pool", "lock")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from vms.config import format_config

        if self.instance.pk is not None and not self.is_bound:
            self.fields["config_text"].initial = format_config(self.instance.config)

    def clean(self) -> dict[str, Any]:
        from vms.config import ConfigError, parse_config, validate_options

        data = super().clean()
        try:
            parsed = parse_config(data.get("config_text") or "")
            parsed.pop("lock", None)
            data["config"] = validate_options(parsed, creating=self.instance.pk is None)
        except ConfigError as exc:
            errors = getattr(exc, "errors", None) or {}
            message = "; ".join(f"{k}: {v}" for k, v in errors.items()) or str(exc)
            raise forms.ValidationError({"config_text": message}) from None
        return data

    def save(self, commit: bool = True) -> VM:
        self.instance.config = self.cleaned_data["config"]
        return super().save(commit=commit)


@admin.register(VM)
class VMAdmin(AuditedModelAdmin):
    acl_root, acl_object = "/vms", "/vms/{vmid}"
    acl_view = ("VM.Audit",)
    acl_change = (
        "VM.Config.Disk",
        "VM.Config.CPU",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.HWType",
        "VM.Config.Options",
    )
    acl_add = acl_delete = ("VM.Allocate",)
    form = VMForm
    list_display = ("vmid", "name", "node", "pool", "lock")
    list_filter = ("node", "pool")
    search_fields = ("vmid",)
    fields = ("vmid", "node", "pool", "lock", "lock_owner", "config_text")

    @admin.display(description="name")
    def name(self, vm: VM) -> str:
        return str(vm.config.get("name", ""))

    def get_readonly_fields(self, request: Any, obj: Any = None) -> tuple[str, ...]:
        # lock_owner is the task holding the lock: set and cleared by tasks (or ``qm unlock``), never typed in
        return ("vmid", "node", "lock_owner") if obj is not None else ("lock_owner",)
