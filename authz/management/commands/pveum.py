"""``manage.py pveum``: users, groups, roles, ACLs and API tokens, as Proxmox's ``pveum`` (run as root@pam)."""

from __future__ import annotations

import functools
import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from authz import ids, services
from authz.exceptions import AccessError
from authz.models import SUPERUSER, ACLEntry, APIToken, Group, Pool, Role, User
from authz.privileges import BUILTIN_ROLES
from authz.services import realms
from replicator.exceptions import ReplicationError


def _bool(value: str) -> bool:
    if value not in ("0", "1"):
        raise CommandError(f"expected 0 or 1, got '{value}'")
    return value == "1"


def _list(value: str | None) -> list[str]:
    return [item for item in (value or "").replace(";", ",").split(",") if item]


REALM_OPTIONS = ("domain", *realms.LDAP_OPTIONS)


class Command(BaseCommand):
    help = "User management: user, group, role, acl, pool, realm and user token commands (Proxmox's pveum)."
    actor: User

    def add_arguments(self, parser: CommandParser) -> None:
        top = parser.add_subparsers(dest="area", required=True)
        user = top.add_parser("user").add_subparsers(dest="verb", required=True)
        for verb in ("add", "modify"):
            sub = user.add_parser(verb)
            sub.add_argument("userid")
            for option in ("email", "firstname", "lastname", "comment", "keys", "groups"):
                sub.add_argument(f"--{option}")
            sub.add_argument("--expire", type=int)
            sub.add_argument("--enable", type=_bool)
            if verb == "add":
                sub.add_argument("--password", help="pve realm only; prompted when given as '-'")
            else:
                sub.add_argument("--append", action="store_true", help="add to --groups instead of replacing")
        user.add_parser("delete").add_argument("userid")
        user.add_parser("list")
        token = user.add_parser("token").add_subparsers(dest="token_verb", required=True)
        add = token.add_parser("add")
        add.add_argument("userid")
        add.add_argument("tokenid")
        add.add_argument("--privsep", type=_bool, default=True)
        add.add_argument("--expire", type=int, default=0)
        add.add_argument("--comment", default="")
        remove = token.add_parser("remove")
        remove.add_argument("userid")
        remove.add_argument("tokenid")
        token.add_parser("list").add_argument("userid")
        group = top.add_parser("group").add_subparsers(dest="verb", required=True)
        gadd = group.add_parser("add")
        gadd.add_argument("groupid")
        gadd.add_argument("--comment", default="")
        group.add_parser("delete").add_argument("groupid")
        group.add_parser("list")
        role = top.add_parser("role").add_subparsers(dest="verb", required=True)
        for verb in ("add", "modify"):
            sub = role.add_parser(verb)
            sub.add_argument("roleid")
            sub.add_argument("--privs", default="")
            if verb == "modify":
                sub.add_argument("--append", action="store_true")
        role.add_parser("delete").add_argument("roleid")
        role.add_parser("list")
        acl = top.add_parser("acl").add_subparsers(dest="verb", required=True)
        for verb in ("modify", "delete"):
            sub = acl.add_parser(verb)
            sub.add_argument("path")
            sub.add_argument("--roles", required=True)
            sub.add_argument("--users")
            sub.add_argument("--groups")
            sub.add_argument("--tokens")
            sub.add_argument("--propagate", type=_bool, default=True)
        acl.add_parser("list")
        realm = top.add_parser("realm").add_subparsers(dest="verb", required=True)
        for verb in ("add", "modify"):
            sub = realm.add_parser(verb)
            sub.add_argument("realm")
            if verb == "add":
                sub.add_argument("--type", required=True, choices=["ldap", "ad"])
            for option in (*REALM_OPTIONS, "comment"):
                sub.add_argument(f"--{option}")
            sub.add_argument("--default", type=_bool)
            sub.add_argument("--password", help="bind password; '-' prompts")
            if verb == "modify":
                sub.add_argument("--delete", help="options to remove (comma-separated)")
        realm.add_parser("delete").add_argument("realm")
        realm.add_parser("list")
        sync = realm.add_parser("sync")
        sync.add_argument("realm")
        sync.add_argument("--scope", choices=["users", "groups", "both"], default="both")
        sync.add_argument("--remove-vanished", action="store_true")
        pool = top.add_parser("pool").add_subparsers(dest="verb", required=True)
        for verb in ("add", "modify"):
            sub = pool.add_parser(verb)
            sub.add_argument("poolid")
            sub.add_argument("--comment", default="")
        pool.add_parser("delete").add_argument("poolid")
        pool.add_parser("list")

    def handle(self, *args: Any, **options: Any) -> None:
        area, verb = options["area"], options.get("verb")
        try:
            self.actor = User.objects.get(userid=SUPERUSER)  # pveum runs as root@pam, as Proxmox's
            getattr(self, f"_{area}")(verb, options)
        except AccessError as exc:
            raise CommandError(str(exc)) from None
        except ReplicationError as exc:
            raise CommandError(str(exc)) from None

    def _user(self, verb: str, o: dict[str, Any]) -> None:
        fields = {k: o.get(k) for k in ("email", "firstname", "lastname", "comment", "keys", "expire", "enable")}
        fields = {k: v for k, v in fields.items() if v is not None}
        if verb == "add":
            password = o["password"]
            if password == "-":
                password = getpass.getpass("Enter new password: ")
                if password != getpass.getpass("Retype new password: "):
                    raise CommandError("passwords do not match")
            services.add_user(o["userid"], actor=self.actor, password=password, groups=_list(o["groups"]), **fields)
        elif verb == "modify":
            groups = _list(o["groups"]) if o["groups"] is not None else None
            services.modify_user(o["userid"], actor=self.actor, groups=groups, append=o["append"], **fields)
        elif verb == "delete":
            services.delete_user(o["userid"], actor=self.actor)
        elif verb == "list":
            for user in User.objects.all():
                memberships = ",".join(user.memberships.order_by("group_id").values_list("group_id", flat=True))
                self.stdout.write(f"{user.userid}\t{int(user.enable)}\t{user.expire}\t{user.email}\t{memberships}")
        elif verb == "token":
            self._token(o)

    def _token(self, o: dict[str, Any]) -> None:
        verb = o["token_verb"]
        if verb == "add":
            token, secret = services.add_token(
                o["userid"],
                o["tokenid"],
                actor=self.actor,
                privsep=o["privsep"],
                expire=o["expire"],
                comment=o["comment"],
            )
            self.stdout.write(f"full-tokenid: {token.tokenid}\nvalue: {secret}\n(the value is shown only once)")
        elif verb == "remove":
            services.delete_token(ids.make_tokenid(o["userid"], o["tokenid"]), actor=self.actor)
        else:
            for token in APIToken.objects.filter(user_id=o["userid"]):
                self.stdout.write(f"{token.name}\t{int(token.privsep)}\t{token.expire}\t{token.comment}")

    def _group(self, verb: str, o: dict[str, Any]) -> None:
        if verb == "add":
            services.add_group(o["groupid"], actor=self.actor, comment=o["comment"])
        elif verb == "delete":
            services.delete_group(o["groupid"], actor=self.actor)
        else:
            for group in Group.objects.all():
                members = ",".join(group.members.order_by("user_id").values_list("user_id", flat=True))
                self.stdout.write(f"{group.groupid}\t{members}\t{group.comment}")

    def _role(self, verb: str, o: dict[str, Any]) -> None:
        if verb in ("add", "modify"):
            services.save_role(
                o["roleid"], _list(o["privs"]), actor=self.actor, create=verb == "add", append=o.get("append", False)
            )
        elif verb == "delete":
            services.delete_role(o["roleid"], actor=self.actor)
        else:
            for roleid, privs in sorted(BUILTIN_ROLES.items()):
                self.stdout.write(f"{roleid}\t{','.join(sorted(privs))}\t(special)")
            for role in Role.objects.all():
                self.stdout.write(f"{role.roleid}\t{','.join(sorted(role.privs))}")

    def _acl(self, verb: str, o: dict[str, Any]) -> None:
        if verb == "list":
            for entry in ACLEntry.objects.all():
                self.stdout.write(f"{entry.path}\t{entry.type}\t{entry.ugid}\t{entry.roleid}\t{int(entry.propagate)}")
            return
        services.modify_acl(
            self.actor,
            o["path"],
            _list(o["roles"]),
            users=_list(o["users"]),
            groups=_list(o["groups"]),
            tokens=_list(o["tokens"]),
            propagate=o["propagate"],
            delete=verb == "delete",
        )

    def _pool(self, verb: str, o: dict[str, Any]) -> None:
        if verb == "add":
            services.add_pool(o["poolid"], actor=self.actor, comment=o["comment"])
        elif verb == "modify":
            services.modify_pool(o["poolid"], actor=self.actor, comment=o["comment"])
        elif verb == "delete":
            services.delete_pool(o["poolid"], actor=self.actor)
        else:
            for pool in Pool.objects.all():
                self.stdout.write(f"{pool.poolid}\t{pool.comment}")

    def _realm(self, verb: str, o: dict[str, Any]) -> None:
        from authz import ldap_realm, operations
        from authz.models import Realm
        from portal.tasks import index, logs

        if verb == "list":
            for realm in Realm.objects.all():
                self.stdout.write(f"{realm.realm}\t{realm.type}\t{realm.comment}")
            return
        if verb == "sync":
            lines: list[str] = []
            work = functools.partial(
                operations.sync_realm,
                realm=o["realm"],
                actor=self.actor,
                scope=o["scope"],
                remove_vanished=o["remove_vanished"],
            )
            upid = index.run_inline("auth-realm-sync", o["realm"], SUPERUSER, work)
            for entry in logs.read_log(upid, 0, 10_000)[0]:
                lines.append(str(entry["t"]))
            self.stdout.write("\n".join(lines))
            if lines and lines[-1] != "TASK OK":
                raise CommandError(lines[-1])
            return
        name = o["realm"]
        if verb == "delete":
            services.delete_realm(name, actor=self.actor)
            return
        options = {key: o[key] for key in REALM_OPTIONS if o.get(key) is not None}
        password = o.get("password")
        if password == "-":
            password = getpass.getpass("Enter bind password: ")
        if verb == "add":
            realm = services.add_realm(
                name,
                o["type"],
                actor=self.actor,
                comment=o.get("comment") or "",
                default=bool(o.get("default")),
                options=options,
                password=password,
            )
        else:
            realm = services.modify_realm(
                name,
                actor=self.actor,
                comment=o.get("comment"),
                default=o.get("default"),
                options=options,
                delete=_list(o.get("delete")),
                password=password,
            )
        if realm.type in realms.ADDABLE_TYPES:
            try:
                ldap_realm.config(realm)
            except ldap_realm.RealmConfigError as exc:
                self.stderr.write(f"warning: {exc}")
