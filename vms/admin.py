"""Admin for storages and VM configurations: every save goes through the services, as the API's do."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from authz.admin_base import AuditedModelAdmin
from authz.permissions import PermissionDenied as ACLDenied
from replicator.exceptions import ConflictError
from vms import services
from vms.config import ConfigError, format_config, parse_config
from vms.exceptions import VMError
from vms.models import VM, Storage
from vms.permissions import CONFIG_PRIVILEGES
from vms.services.storage import FIELDS as STORAGE_FIELDS

SERVICE_ERRORS = (VMError, ConfigError, ACLDenied)


def _form_error(exc: Exception, field: str) -> forms.ValidationError:
    """A service's refusal on the form: parameter errors on ``field`` (or on ``pool``), others on top."""
    errors = getattr(exc, "errors", None) or {}
    if not errors:
        return forms.ValidationError(str(exc))
    if set(errors) == {"pool"}:
        return forms.ValidationError({"pool": errors["pool"]})
    return forms.ValidationError({field: "; ".join(f"{k}: {v}" for k, v in errors.items())})


class StorageForm(forms.ModelForm[Storage]):
    """Validated by the storage service, so that no value can break a line of storage.cfg."""

    actor: Any = None  # the request's user, set by StorageAdmin.get_form

    class Meta:
        model = Storage
        fields = ("storeid", "type", "path", "content", "shared", "nodes", "disable", "format", "pool")

    def clean(self) -> dict[str, Any]:
        super().clean()  # a ModelForm's clean() returns its cleaned_data
        data = self.cleaned_data
        adding = self.instance._state.adding
        storeid = data.get("storeid", "") if adding else self.instance.storeid
        fields = {name: data.get(name) for name in STORAGE_FIELDS if name in data}
        fields["pool"] = data["pool"].poolid if data.get("pool") else None
        try:
            self.checked = services.check_storage(
                storeid, fields, actor=self.actor, current=None if adding else self.instance
            )
        except (*SERVICE_ERRORS, ConflictError) as exc:
            raise _form_error(exc, "path") from None
        return data


@admin.register(Storage)
class StorageAdmin(AuditedModelAdmin[Storage]):
    """Storage definitions, as ``/storage``: Datastore.Allocate on /storage to add, change or remove."""

    acl_root, acl_object = "/storage", "/storage/{storeid}"
    acl_view, acl_change = ("Datastore.Audit", "Datastore.AllocateSpace"), ("Datastore.Allocate",)
    form = StorageForm
    service_errors = SERVICE_ERRORS
    list_display = ("storeid", "type", "path", "content", "shared", "nodes", "disable")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._acl(request, self.acl_change)  # on /storage, as Proxmox's PUT /storage/{storage}

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._acl(request, self.acl_change)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("storeid", "type") if obj is not None else ()

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    def save_model(self, request: HttpRequest, obj: Storage, form: Any, change: bool) -> None:
        if change:
            current = Storage.objects.get(pk=obj.pk)
            loaded = self.loaded_version(request)
            if loaded is not None:
                current.version = loaded
            saved = services.update_storage(current, form.checked, actor=request.user)
        else:
            saved = services.create_storage(obj.storeid, form.checked, actor=request.user)
        obj.version = saved.version

    def delete_model(self, request: HttpRequest, obj: Storage) -> None:
        services.delete_storage(obj, actor=request.user)


class VMForm(forms.ModelForm[VM]):
    """The config is edited as Proxmox writes it: ``key: value`` lines.

    ``clean`` works out which keys the text adds, changes and removes, and has the service check
    exactly those (values, privileges, lock) before anything is saved.
    """

    config_text = forms.CharField(
        label="Configuration",
        widget=forms.Textarea(attrs={"rows": 16, "cols": 80}),
        required=False,
        help_text="One 'key: value' per line, as in qemu-server/<vmid>.conf.",
    )
    actor: Any = None  # the request's user, set by VMAdmin.get_form

    class Meta:
        model = VM
        fields = ("vmid", "node", "pool")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and not self.is_bound:
            self.fields["config_text"].initial = format_config(self.instance.config)

    def clean(self) -> dict[str, Any]:
        super().clean()  # a ModelForm's clean() returns its cleaned_data
        data = self.cleaned_data
        try:
            parsed = parse_config(data.get("config_text") or "")
        except ConfigError as exc:
            raise _form_error(exc, "config_text") from None
        pool = data["pool"].poolid if data.get("pool") else None
        try:
            if self.instance.pk is None:
                self.changes: dict[str, Any] = {"options": parsed, "pool": pool}
                if "vmid" in data and "node" in data:
                    services.check_vm_create(data["vmid"], parsed, node=data["node"].pk, actor=self.actor, pool=pool)
            else:
                current = self.instance.config
                set_ = {key: value for key, value in parsed.items() if current.get(key) != value}
                delete = [key for key in current if key not in parsed]
                moved = pool if pool != self.instance.pool_id else services.UNCHANGED
                self.changes = {"set_": set_, "delete": delete, "pool": moved}
                if set_ or delete or moved is not services.UNCHANGED:
                    services.check_vm_update(self.instance, set_=set_, delete=delete, pool=moved, actor=self.actor)
        except SERVICE_ERRORS as exc:
            raise _form_error(exc, "config_text") from None
        except ConflictError as exc:
            raise forms.ValidationError({"vmid": str(exc)}) from None
        return data


@admin.register(VM)
class VMAdmin(AuditedModelAdmin[VM]):
    """VMs: any VM.Config.* privilege opens the change form; saving checks each changed key's own."""

    acl_root, acl_object = "/vms", "/vms/{vmid}"
    acl_view = ("VM.Audit",)
    acl_change = CONFIG_PRIVILEGES
    acl_add = acl_delete = ("VM.Allocate",)
    form = VMForm
    service_errors = SERVICE_ERRORS
    list_display = ("vmid", "name", "node", "pool", "lock")
    list_select_related = ("node", "pool")  # one query for the page, not one per VM
    list_filter = ("node", "pool")
    search_fields = ("vmid",)
    fields = ("vmid", "node", "pool", "lock", "lock_owner", "config_text")

    @admin.display(description="name")
    def name(self, vm: VM) -> str:
        return str(vm.config.get("name", ""))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # the lock is a task's lease: taken and released by tasks, removed by hand only with ``qm unlock``
        return ("vmid", "node", "lock", "lock_owner") if obj is not None else ("lock", "lock_owner")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    def save_model(self, request: HttpRequest, obj: VM, form: Any, change: bool) -> None:
        changes = form.changes
        if not change:
            vm = services.create_vm(
                obj.vmid, changes["options"], node=obj.node_id, pool=changes["pool"], actor=request.user
            )
        elif changes["set_"] or changes["delete"] or changes["pool"] is not services.UNCHANGED:
            vm = VM.objects.get(pk=obj.pk)
            loaded = self.loaded_version(request)
            if loaded is not None:
                vm.version = loaded  # the version the operator saw: a change made since is a conflict
            services.update_vm_config(
                vm, set_=changes["set_"], delete=changes["delete"], pool=changes["pool"], actor=request.user
            )
        else:
            return
        obj.config, obj.pool_id, obj.version = vm.config, vm.pool_id, vm.version

    def delete_model(self, request: HttpRequest, obj: VM) -> None:
        services.destroy_vm(obj, actor=request.user)
