"""An API client logged in as a user of the session node, and waiting for a task to end (the VM disk tests)."""

from __future__ import annotations

import time

from django.test import Client

from portal.models import Task

API = "/api2/json"


def logged_in(username: str = "root@pam", password: str = "test-root-password") -> Client:
    """A test client with the user's ticket cookie and CSRF token."""
    data = Client().post(f"{API}/access/ticket", {"username": username, "password": password}).json()["data"]
    client = Client(headers={"CSRFPreventionToken": data["CSRFPreventionToken"]})
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client


def finished_task(upid: str, timeout: float = 60) -> Task:
    """The task's row once it has stopped (an AssertionError if it does not within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = Task.objects.filter(upid=upid).first()
        if task is not None and task.status == Task.STOPPED:
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {upid} did not finish")


def login_enforcing_csrf(username: str, password: str) -> tuple[Client, str]:
    """A client that checks CSRF as a browser's would, and the token to send with its writes."""
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": username, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


def users_with_grants(userids: tuple[str, ...], password: str, grants: list[tuple[str, str, list[str]]]) -> None:
    """The users (created once, with ``password``) holding exactly ``grants``: (path, role, users) each."""
    from authz import services
    from authz.models import ACLEntry, User

    root = User.objects.get(userid="root@pam")
    for userid in userids:
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=password)
    for entry in ACLEntry.objects.filter(ugid__in=userids):
        entry.delete()
    for path, role, users in grants:
        services.modify_acl(root, path, [role], users=users)


def revoke_grants(userids: tuple[str, ...]) -> None:
    """The ACL entries of ``userids`` removed (a module's grants must not show in later modules' user.cfg)."""
    from authz.models import ACLEntry

    for entry in ACLEntry.objects.filter(ugid__in=userids):
        entry.delete()
