"""``/access/domains``: the authentication realms (Proxmox's ``domains.cfg`` API).

``GET /access/domains`` lists them without a login (a login form offers them). Creating,
changing and removing one needs Realm.Allocate on ``/access/realm`` (:mod:`authz.services.realms`
checks); reading one Realm.Allocate or Sys.Audit on ``/access/realm/{realm}``, and its bind
password is never answered. ``POST .../sync`` copies an LDAP or AD realm's users and groups as an
``auth-realm-sync`` task (Realm.AllocateUser on the realm and User.Modify on ``/access/groups``).
"""

from __future__ import annotations

import functools
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import operations, services
from authz.models import Realm
from authz.permissions import check, principal_of
from authz.services.realms import LDAP_OPTIONS
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.schema import BOOL, STR, Permission, array, endpoint, obj
from portal.api.views import PVEAPIView, ok
from portal.tasks.index import run_api_task

OPTION_KEYS = ("domain", *LDAP_OPTIONS)


def _realm_values(request: Request, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request's fields and its realm options (``delete`` a list of keys)."""
    values = params.collect(request, kwargs)
    with params.ParamCollector(values) as p:
        fields = {
            "comment": p.string("comment", max_length=4096, default=None),
            "default": p.boolean("default", default=None),
            "password": p.string("password", max_length=4096, default=None),
            "type": p.enum("type", ("pam", "pve", "ldap", "ad"), default=None),
            "delete": p.string("delete", max_length=4096, default=""),
        }
    options = {key: values[key] for key in OPTION_KEYS if key in values}
    known = {"realm", "digest", *fields, *OPTION_KEYS}
    unknown = {key: "property is not defined in schema" for key in values if key not in known}
    if unknown:
        raise ParameterError(unknown)
    return fields, options


class DomainsView(PVEAPIView):
    """``GET /access/domains``: the realms a login form offers (no login needed, as in Proxmox); ``POST`` adds one."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.public = request.method in ("GET", "HEAD")  # creating a realm needs a login, of course
        super().initial(request, *args, **kwargs)

    @endpoint(
        "The authentication realms (for the login form).",
        Permission(user="world"),
        returns=array(obj({"realm": STR, "type": STR}, comment=STR, default=BOOL)),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        entries = []
        for realm in Realm.objects.all():
            entry: dict[str, Any] = {"realm": realm.realm, "type": realm.type, "comment": realm.comment}
            if realm.default:
                entry["default"] = 1
            entries.append(entry)
        return ok(entries)

    def post(self, request: Request, **kwargs: Any) -> Response:
        fields, options = _realm_values(request, kwargs)
        realm = params.collect(request, kwargs).get("realm")
        if not realm:
            raise ParameterError({"realm": "property is missing and it is not optional"})
        if not fields["type"]:
            raise ParameterError({"type": "property is missing and it is not optional"})
        services.add_realm(
            str(realm),
            fields["type"],
            actor=request.user,
            comment=fields["comment"] or "",
            default=bool(fields["default"]),
            options=options,
            password=fields["password"],
        )
        return ok(None)


class DomainView(PVEAPIView):
    def get(self, request: Request, realm: str, **kwargs: Any) -> Response:
        check(request.user, f"/access/realm/{realm}", ["Realm.Allocate", "Sys.Audit"], any_of=True)
        row = Realm.objects.filter(realm=realm).first()
        if row is None:
            raise ParameterError({"realm": f"domain '{realm}' does not exist"})
        answer: dict[str, Any] = {"type": row.type, **row.options}
        if row.comment:
            answer["comment"] = row.comment
        if row.default:
            answer["default"] = 1
        return ok(answer)

    def put(self, request: Request, realm: str, **kwargs: Any) -> Response:
        fields, options = _realm_values(request, {"realm": realm, **kwargs})
        deleted = params.id_list(fields["delete"])
        services.modify_realm(
            realm,
            actor=request.user,
            realm_type=fields["type"],
            comment=fields["comment"],
            default=None if fields["default"] is None else bool(fields["default"]),
            options=options,
            delete=deleted,
            password=fields["password"],
        )
        return ok(None)

    def delete(self, request: Request, realm: str, **kwargs: Any) -> Response:
        services.delete_realm(realm, actor=request.user)
        return ok(None)


class DomainSyncView(PVEAPIView):
    def post(self, request: Request, realm: str, **kwargs: Any) -> Response:
        check(request.user, f"/access/realm/{realm}", ["Realm.AllocateUser"])  # before the task, as Proxmox
        check(request.user, "/access/groups", ["User.Modify"])
        values = params.collect(request, {"realm": realm, **kwargs})
        with params.ParamCollector(values) as p:
            scope = p.enum("scope", ("users", "groups", "both"), default="both")
            vanished = p.string("remove-vanished", max_length=64, default="")
            dry_run = p.boolean("dry-run", default=0)
        if dry_run:
            raise ParameterError({"dry-run": "not supported by this implementation yet"})
        parts = set(vanished.split(";")) - {""}
        if parts - {"acl", "entry", "properties", "none", "1", "0"}:
            raise ParameterError({"remove-vanished": "a list of acl, entry, properties (or none)"})
        work = functools.partial(
            operations.sync_realm,
            realm=realm,
            actor=request.user,
            scope=scope,
            remove_vanished=bool(parts & {"entry", "1"}),
        )
        return ok(run_api_task("auth-realm-sync", realm, principal_of(request.user) or "", work))
