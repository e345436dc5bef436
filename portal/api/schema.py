"""One declaration per API method: what it takes, who may call it, what it answers.

``@endpoint(...)`` on a view method is the single source of three things: the permission check
(run first, on the raw parameters, as Proxmox's HTTP server runs ``check_api2_permissions``
before the handler verifies its parameters), the parameter verification (every error at once,
unknown parameters refused, as pve-common's JSONSchema does) and the OpenAPI description
(:mod:`portal.api.openapi`). The handler receives the verified values, path ones included.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import params
from portal.api.errors import APIError
from portal.api.routing import PLACEHOLDER

UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"


@dataclass(frozen=True)
class Param:
    """One parameter: its JSON type and the bounds pve-common checks."""

    kind: str  # integer | boolean | string
    description: str = ""
    optional: bool = False
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int = 4096

    def but(self, **changes: Any) -> Param:
        """This parameter with some fields changed (``NODE.but(optional=True)``)."""
        return dataclasses.replace(self, **changes)

    def parse(self, value: Any, name: str) -> Any:
        """The value as the handler gets it, or ParameterError with Proxmox's message."""
        if self.kind == "integer":
            return params.integer(value, name, self.minimum, self.maximum)
        if self.kind == "boolean":
            return params.boolean(value, name)
        if self.choices is not None:
            return params.enum(value, name, self.choices)
        return params.string(value, name, max_length=self.max_length, pattern=self.pattern)

    def json_schema(self) -> dict[str, Any]:
        """This parameter as JSON Schema (a boolean is 0 or 1, as Proxmox takes and answers it)."""
        schema: dict[str, Any] = {"type": "integer" if self.kind == "boolean" else self.kind}
        if self.kind == "boolean":
            schema["enum"] = [0, 1]
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.kind == "string" and self.choices is None:
            schema["maxLength"] = self.max_length
            if self.pattern is not None:
                schema["pattern"] = f"^(?:{self.pattern})$"
        if self.default is not None:
            schema["default"] = self.default
        if self.description:
            schema["description"] = self.description
        return schema


def integer(description: str = "", **kwargs: Any) -> Param:
    return Param("integer", description, **kwargs)


def boolean(description: str = "", **kwargs: Any) -> Param:
    return Param("boolean", description, **kwargs)


def string(description: str = "", **kwargs: Any) -> Param:
    return Param("string", description, **kwargs)


def enum(choices: tuple[str, ...], description: str = "", **kwargs: Any) -> Param:
    return Param("string", description, choices=choices, **kwargs)


NODE = string("The cluster node name.", pattern=r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", max_length=63)
VMID = integer("The (unique) ID of the VM.", minimum=100, maximum=999_999_999)


PrivilegeCheck = Callable[[Any, str, tuple[str, ...], bool], None]
_privilege_check: PrivilegeCheck | None = None


def register_privilege_check(check: PrivilegeCheck) -> None:
    """The access-control app's check (raises when the caller lacks the privileges); portal sits below it."""
    global _privilege_check
    _privilege_check = check


@dataclass(frozen=True)
class Permission:
    """Proxmox's ``permissions`` of a method: a privilege check on a path, any user, or prose.

    ``path`` may name parameters (``/nodes/{node}``); with ``privs`` the check runs before the
    parameters are verified. Without ``privs`` the handler checks (``description`` says how).
    """

    path: str | None = None
    privs: tuple[str, ...] = ()
    any_of: bool = False
    description: str = ""
    user: str | None = None  # "all": any authenticated caller; "world": no login at all

    def check(self, request: Request, values: Mapping[str, Any]) -> None:
        if not self.privs or self.path is None:
            return
        if _privilege_check is None:  # fail closed: a declared check never passes unchecked
            raise APIError(500, "no privilege check registered")
        path = PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), "")), self.path)
        _privilege_check(request.user, path, self.privs, self.any_of)

    def with_description(self, description: str) -> Permission:
        """This permission, saying how the handler checks the rest."""
        return dataclasses.replace(self, description=description)

    def as_proxmox(self) -> dict[str, Any]:
        """The form Proxmox's API schema gives (``check``: ``["perm", path, privs, "any", 1]``)."""
        described: dict[str, Any] = {}
        if self.privs and self.path is not None:
            described["check"] = ["perm", self.path, list(self.privs), *(["any", 1] if self.any_of else [])]
        if self.user:
            described["user"] = self.user
        if self.description:
            described["description"] = self.description
        return described


ANY_USER = Permission(user="all")


@dataclass(frozen=True)
class Endpoint:
    """The declaration of one method, as :func:`endpoint` records it on the handler."""

    description: str
    permission: Permission
    parameters: Mapping[str, Param] = field(default_factory=dict)
    returns: Mapping[str, Any] = field(default_factory=dict)  # JSON Schema of ``data``
    extra: Mapping[str, Any] = field(default_factory=dict)  # JSON Schema of top-level keys beside it

    def verify(self, values: Mapping[str, Any], only: set[str] | None = None) -> dict[str, Any]:
        """The verified values (defaults filled in); every bad or unknown parameter in one 400.

        ``only``: just these parameters (the ones a permission path names), unknown ones aside.
        """
        collector = params.ParamCollector(values)
        verified: dict[str, Any] = {}
        if only is None:
            for name in sorted(set(values) - set(self.parameters)):
                collector.add(name, UNKNOWN)
        for name, param in self.parameters.items():
            if only is not None and (name not in only or values.get(name) is None):
                continue
            value = values.get(name)
            blank = value == "" and param.optional and (param.kind != "string" or param.choices is not None)
            if value is None or blank:  # an optional number, flag or choice sent empty: not given
                if not param.optional:
                    collector.add(name, params.MISSING_MESSAGE)
                verified[name] = param.default
                continue
            verified[name] = collector.check(param.parse, value, name)
        collector.raise_errors()
        return verified


Handler = Callable[[Any, Request, dict[str, Any]], Any]


def endpoint(
    description: str,
    permission: Permission,
    parameters: Mapping[str, Param] | None = None,
    returns: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Callable[[Handler], Callable[..., Any]]:
    """Declare a view method; it is then called as ``handler(self, request, values)``."""
    declared = Endpoint(description, permission, dict(parameters or {}), dict(returns or {}), dict(extra or {}))
    named = set(PLACEHOLDER.findall(permission.path or ""))  # the parameters the permission path names

    def wrap(handler: Handler) -> Callable[..., Any]:
        @functools.wraps(handler)
        def run(self: Any, request: Request, **path: Any) -> Response:
            values = params.collect(request, path)
            declared.verify(values, only=named)  # a bad id in the checked path is a 400, not a 403
            declared.permission.check(request, values)
            return handler(self, request, declared.verify(values))

        run.declaration = declared  # type: ignore[attr-defined]  # read by portal.api.openapi
        return run

    return wrap


def declaration(view: type, method: str) -> Endpoint | None:
    """The declaration of ``view.<method>``, None when it has none."""
    return getattr(getattr(view, method, None), "declaration", None)


# --- JSON Schema shorthands for ``returns`` ----------------------------------------------------

INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}
STR: dict[str, Any] = {"type": "string"}
BOOL: dict[str, Any] = {"type": "integer", "enum": [0, 1]}
NULL: dict[str, Any] = {"type": "null"}


def obj(required: Mapping[str, Any] | None = None, **optional: Any) -> dict[str, Any]:
    """An object with these properties, ``required`` ones always present; others allowed."""
    properties = {**(required or {}), **optional}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = sorted(required)
    return schema


def array(items: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": dict(items)}
