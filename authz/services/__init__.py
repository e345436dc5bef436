"""The functions that change access-control state, one module per resource; edges call these.

Each takes ``actor`` (who asks), applies Proxmox's permission rules for it, validates its input
fully before writing, and writes the change with its cluster-log entry in one change set.
"""

from authz.services.acl import modify_acl, remove_object_access
from authz.services.groups import add_group, delete_group, modify_group, set_group_members
from authz.services.keys import rotate_authkey_if_due
from authz.services.pools import add_pool, delete_pool, modify_pool
from authz.services.realm_sync import sync_realm
from authz.services.realms import add_realm, delete_realm, modify_realm
from authz.services.roles import delete_role, save_role
from authz.services.tokens import add_token, delete_token, modify_token
from authz.services.users import add_user, delete_user, modify_user, set_password

__all__ = [
    "add_group",
    "add_pool",
    "add_realm",
    "add_token",
    "add_user",
    "delete_group",
    "delete_pool",
    "delete_realm",
    "delete_role",
    "delete_token",
    "delete_user",
    "modify_acl",
    "modify_group",
    "modify_pool",
    "modify_realm",
    "modify_token",
    "modify_user",
    "remove_object_access",
    "rotate_authkey_if_due",
    "save_role",
    "set_group_members",
    "set_password",
    "sync_realm",
]
