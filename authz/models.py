"""Replicated access-control models: realms, users (the AUTH_USER_MODEL), pools, key material."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models

from replicator.models import ReplicatedModel, ReplicatedQuerySet

SUPERUSER = "root@pam"


class Realm(ReplicatedModel):
    """An authentication domain (``domains.cfg``); ``pam`` and ``pve`` always exist."""

    TYPES = [
        ("pam", "Linux PAM"),
        ("pve", "Proxmox VE authentication server"),
        ("ldap", "LDAP"),
        ("ad", "Active Directory"),
    ]

    realm = models.CharField(max_length=32, primary_key=True)
    type = models.CharField(max_length=16, choices=TYPES)
    comment = models.CharField(max_length=4096, blank=True, default="")
    default = models.BooleanField(default=False)
    options = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["realm"]

    def __str__(self) -> str:
        return self.realm


class UserManager(BaseUserManager["User"]):
    """Looks users up by userid (``name@realm``); queries through the replicated queryset.

    ``from_queryset`` would add nothing here (every method of the queryset is already a manager
    method), and the type checker's Django plugin does not follow it on this manager.
    """

    _queryset_class = ReplicatedQuerySet

    def get_by_natural_key(self, username: str | None) -> User:
        return self.get(userid=username)


class User(ReplicatedModel, AbstractBaseUser):
    """``name@realm``; password hashes are kept for the ``pve`` realm and ``root@pam``."""

    userid = models.CharField(max_length=64, primary_key=True)
    realm = models.ForeignKey(Realm, on_delete=models.PROTECT, related_name="users")
    enable = models.BooleanField(default=True)
    expire = models.BigIntegerField(default=0, help_text="Epoch seconds; 0 means never.")
    firstname = models.CharField(max_length=255, blank=True, default="")
    lastname = models.CharField(max_length=255, blank=True, default="")
    email = models.CharField(max_length=255, blank=True, default="")
    comment = models.CharField(max_length=4096, blank=True, default="")
    keys = models.CharField(max_length=4096, blank=True, default="")
    last_login = None  # a login is not a cluster-wide write

    # The auth manager (natural keys) over the replicated queryset: not a ReplicatedManager subclass.
    objects = UserManager()  # type: ignore[assignment,misc]

    USERNAME_FIELD = "userid"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        ordering = ["userid"]

    def __str__(self) -> str:
        return self.userid

    @property
    def is_superuser(self) -> bool:
        return self.userid == SUPERUSER

    @property
    def is_active(self) -> bool:  # type: ignore[override]  # a property where AbstractBaseUser has an attribute
        return self.enable and (self.expire == 0 or self.expire > time.time())

    @property
    def is_staff(self) -> bool:
        return self.is_active

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        """Django-admin permission hook; ACL-based checks replace this in the access-control issue."""
        return self.is_active and self.is_superuser

    def has_perms(self, perms: Any, obj: Any = None) -> bool:
        return all(self.has_perm(perm, obj) for perm in perms)

    def has_module_perms(self, app_label: str) -> bool:
        return self.is_active and self.is_superuser


class Pool(ReplicatedModel):
    """A resource pool grouping VMs and storages (``pool:`` lines in user.cfg)."""

    poolid = models.CharField(max_length=64, primary_key=True)
    comment = models.CharField(max_length=4096, blank=True, default="")

    class Meta:
        ordering = ["poolid"]

    def __str__(self) -> str:
        return self.poolid


class KeyMaterial(ReplicatedModel):
    """A key or certificate kept in the replicated state and rendered at ``path`` in the tree."""

    path = models.CharField(max_length=255, primary_key=True)
    content = models.TextField()
    created = models.BigIntegerField(default=0, help_text="Epoch seconds (the ticket key rotates every 24 h).")

    class Meta:
        ordering = ["path"]
        verbose_name_plural = "key material"

    def __str__(self) -> str:
        return self.path


class Group(ReplicatedModel):
    """A group of users (``group:`` lines); ACLs may name it as ``@groupid``."""

    groupid = models.CharField(max_length=64, primary_key=True)
    comment = models.CharField(max_length=4096, blank=True, default="")

    class Meta:
        ordering = ["groupid"]

    def __str__(self) -> str:
        return self.groupid


class GroupMember(ReplicatedModel):
    """One user in one group; the key ``<groupid>:<userid>`` is the same on every node."""

    key = models.CharField(max_length=140, primary_key=True)
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")

    class Meta:
        ordering = ["key"]

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.key = f"{self.group_id}:{self.user_id}"
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.user_id} in {self.group_id}"


class Role(ReplicatedModel):
    """A custom role (``role:`` lines); the built-in roles are data, never rows."""

    roleid = models.CharField(max_length=64, primary_key=True)
    privs = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["roleid"]

    def __str__(self) -> str:
        return self.roleid


class ACLEntry(ReplicatedModel):
    """One (path, user/group/token, role) grant, as Proxmox's ``acl:`` lines carry them."""

    TYPES = [("user", "user"), ("group", "group"), ("token", "token")]

    key = models.CharField(max_length=400, primary_key=True)
    path = models.CharField(max_length=255)
    type = models.CharField(max_length=8, choices=TYPES)
    ugid = models.CharField(max_length=130)
    roleid = models.CharField(max_length=64)
    propagate = models.BooleanField(default=True)

    class Meta:
        ordering = ["path", "type", "ugid", "roleid"]
        verbose_name = "ACL entry"
        verbose_name_plural = "ACL entries"

    @staticmethod
    def make_key(path: str, type_: str, ugid: str, roleid: str) -> str:
        return f"{path}|{type_}|{ugid}|{roleid}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.key = self.make_key(self.path, self.type, self.ugid, self.roleid)
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.path} {self.type}:{self.ugid} {self.roleid}{'' if self.propagate else ' (no propagate)'}"


class APIToken(ReplicatedModel):
    """``<userid>!<name>``: privilege-separated by default; only a hash of the secret is kept."""

    tokenid = models.CharField(max_length=130, primary_key=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="tokens")
    expire = models.BigIntegerField(default=0, help_text="Epoch seconds; 0 means never.")
    privsep = models.BooleanField(default=True)
    comment = models.CharField(max_length=4096, blank=True, default="")
    secret_hash = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        ordering = ["tokenid"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return self.tokenid

    @property
    def name(self) -> str:
        """The part after ``<user>!``, taken from the row's own user rather than by splitting the id."""
        return self.tokenid[len(self.user_id) + 1 :]


class LoginFailures(models.Model):
    """Node-local (``default`` database) failed-login counter per login name; see ``authz.throttle``."""

    key = models.CharField(max_length=255, primary_key=True)
    count = models.PositiveIntegerField(default=0)
    window_start = models.BigIntegerField(default=0)

    class Meta:
        default_permissions = ()
