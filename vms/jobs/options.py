"""The options of a backup job (``jobs.cfg``): checked and normalised, so no value can break a line of the file.

As Proxmox's ``/cluster/backup`` schema: the job's own keys (``schedule``, ``enabled``,
``repeat-missed``, ``node``, ``comment``) and the vzdump options it passes on when it runs.
Every bad value is reported at once, per parameter (ConfigError: HTTP 400 with ``errors``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from authz.models import Pool
from cluster.models import Node
from vms import config_schema as schema
from vms.config import ConfigError
from vms.exceptions import CalendarEventError
from vms.jobs.calendar import parse_calendar_event
from vms.models import Storage
from vms.property_strings import property_string_parse, shown

JOB_KEYS = ("schedule", "enabled", "repeat-missed", "node", "comment")
MODES = ("snapshot", "suspend", "stop")
COMPRESS = ("0", "1", "gzip", "lzo", "zstd")
KEEP_KEYS = ("keep-all", "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
JOBID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,63}")
NODE_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
MAIL_RE = re.compile(r"[^\s,;]+")
MAX_TEXT = 1024
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"
MISSING = "property is missing and it is not optional"


def _fail(message: str) -> Any:
    raise ValueError(message)


def _boolean(value: object) -> int:
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return 1
    if text in ("0", "false", "no", "off"):
        return 0
    return _fail(f"type check ('boolean') failed - got '{shown(str(value))}'")


def _integer(low: int, high: int | None = None) -> Callable[[object], int]:
    def check(value: object) -> int:
        text = str(value)
        if not re.fullmatch(r"-?[0-9]{1,12}", text):
            return _fail(f"type check ('integer') failed - got '{shown(text)}'")
        number = int(text)
        if number < low or (high is not None and number > high):
            return _fail(f"value must be between {low} and {high}" if high is not None else f"value must be >= {low}")
        return number

    return check


def _enum(allowed: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = str(value)
        return text if text in allowed else _fail(f"value '{shown(text)}' does not have a value in the enumeration")

    return check


def _line(value: object, limit: int = MAX_TEXT) -> str:
    """One line of printable text (a jobs.cfg value cannot span lines)."""
    text = str(value)
    if schema.CONTROL_RE.search(text):
        return _fail("value contains control or bidirectional formatting characters")
    if len(text) > limit:
        return _fail(f"value may have at most {limit} characters")
    return text


def _vmids(value: object) -> str:
    items = [item.strip() for item in re.split(r"[,;\s]+", str(value)) if item.strip()]
    if not items:
        return _fail("empty VMID list")
    for item in items:
        if not schema.VMID_RE.fullmatch(item) or not 100 <= int(item) <= 999_999_999:
            return _fail(f"value '{shown(item)}' does not look like a valid VM ID")
    return ",".join(dict.fromkeys(items))


def _schedule(value: object) -> str:
    text = _line(value, 128)
    try:
        parse_calendar_event(text)
    except CalendarEventError as exc:
        return _fail(f"invalid calendar event '{shown(text)}' - {exc}")
    return " ".join(text.split())


def _node(value: object) -> str:
    text = str(value)
    if not NODE_RE.fullmatch(text):
        return _fail(f"invalid node name '{shown(text)}'")
    if not Node.objects.filter(name=text).exists():
        return _fail(f"no such cluster node '{text}'")
    return text


def _pool(value: object) -> str:
    text = str(value)
    if not Pool.objects.filter(poolid=text).exists():
        return _fail(f"pool '{shown(text)}' does not exist")
    return text


def _storage(value: object) -> str:
    text = str(value)
    storage = Storage.objects.filter(storeid=text).first()
    if storage is None:
        return _fail(f"storage '{shown(text)}' does not exist")
    if "backup" not in storage.content.split(","):
        return _fail(f"storage '{text}' does not support backups")
    return text


def _prune(value: object) -> str:
    """``keep-last=3,keep-daily=7`` or ``keep-all=1``."""
    text = str(value)
    try:
        items = property_string_parse(text, default_key=None)
    except ValueError as exc:
        return _fail(f"invalid format - {exc}")
    for key, number in items.items():
        if key not in KEEP_KEYS:
            return _fail(f"invalid format - unknown option '{shown(key)}'")
        if not number.isdigit() or (key == "keep-all" and number not in ("0", "1")):
            return _fail(f"invalid format - '{key}': type check ('integer') failed")
    if items.get("keep-all") == "1" and any(int(items[k]) for k in items if k != "keep-all"):
        return _fail("keep-all cannot be set together with other options.")
    return ",".join(f"{key}={int(items[key])}" for key in KEEP_KEYS if key in items)


def _mailto(value: object) -> str:
    items = [item for item in re.split(r"[,;\s]+", _line(value)) if item]
    if not items or not all(MAIL_RE.fullmatch(item) for item in items):
        return _fail("invalid mail address list")
    return ",".join(items)


CHECKS: dict[str, Callable[[object], Any]] = {
    "schedule": _schedule,
    "enabled": _boolean,
    "repeat-missed": _boolean,
    "node": _node,
    "comment": lambda value: _line(value, 512),
    "vmid": _vmids,
    "all": _boolean,
    "exclude": _vmids,
    "pool": _pool,
    "storage": _storage,
    "mode": _enum(MODES),
    "compress": _enum(COMPRESS),
    "prune-backups": _prune,
    "notes-template": _line,
    "protected": _boolean,
    "remove": _boolean,
    "bwlimit": _integer(0),
    "ionice": _integer(0, 8),
    "zstd": _integer(0),
    "pigz": _integer(0),
    "lockwait": _integer(0),
    "stopwait": _integer(0),
    "mailto": _mailto,
    "mailnotification": _enum(("always", "failure")),
    "notification-mode": _enum(("auto", "legacy-sendmail", "notification-system")),
}
VZDUMP_KEYS = tuple(key for key in CHECKS if key not in JOB_KEYS)
SELECTION = ("vmid", "all", "pool")


def check_job_id(jobid: object) -> str:
    text = str(jobid)
    if not JOBID_RE.fullmatch(text):
        raise ConfigError({"id": f"invalid format - invalid configuration ID '{shown(text)}'"})
    return text


def check_options(values: Mapping[str, object]) -> dict[str, Any]:
    """Each given option checked and normalised (booleans and integers as numbers); ConfigError lists the bad ones."""
    errors: dict[str, str] = {}
    checked: dict[str, Any] = {}
    for key, value in values.items():
        check = CHECKS.get(key)
        if check is None:
            errors[key] = UNKNOWN
            continue
        try:
            checked[key] = check(value)
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise ConfigError(errors)
    return checked


def check_selection(job: Mapping[str, Any]) -> None:
    """The whole job (after an update too): a schedule, and which VMs, as Proxmox's verify_vzdump_parameters."""
    errors: dict[str, str] = {}
    if not job.get("schedule"):
        errors["schedule"] = MISSING
    if job.get("all") and job.get("vmid"):
        errors["all"] = "option conflicts with option 'vmid'"
    if job.get("exclude") and not (job.get("all") or job.get("pool")):
        errors["exclude"] = "option only makes sense in combination with option 'all' or 'pool'"
    if not any(job.get(key) for key in SELECTION):
        errors["vmid"] = MISSING
    if errors:
        raise ConfigError(errors)
