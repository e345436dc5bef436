#!/usr/bin/env python3
"""Permission checks: resolver speed with 1,000 ACL entries, and a restricted VM listing.

Usage: .venv/bin/python bench/permissions.py [--vms 10000] [--no-append]

Measured in one run:
  1. privilege checks per second with 1,000 ACL entries (users, groups, tokens, pools), both on
     the in-memory snapshot and through ``has_privileges`` (with the per-call version check);
  2. ``GET /nodes/<node>/qemu`` of 10,000 VMs for a user holding 500 ACL entries, against the
     same listing for root@pam (no checks) in the same run: the ratio should stay under 1.5.
Results are appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import command_line, heading, publish  # noqa: E402
from tests.harness import ReplicatorProcess, manage, node_environment  # noqa: E402


def submit_raw(ops: list[dict]) -> None:
    from django.conf import settings

    from replicator import changeset, client

    cs = {"id": uuid.uuid4().hex, "origin": os.environ["PVE_NODE_NAME"], "time": time.time(), "ops": ops}
    payload = changeset.encode(cs)
    result = client.request_at(
        settings.PVE_REPLICATOR_SOCKET, {"op": "submit", "id": cs["id"]}, timeout=60, payload=payload
    )
    assert result["ok"], result


def resolver_rate() -> tuple[float, float]:
    from authz.privileges import BUILTIN_ROLES
    from authz.resolver import ACLState, privileges

    rng = random.Random(1)
    state = ACLState()
    users = [f"u{i}@pve" for i in range(100)]
    for user in users:
        state.users[user] = (True, 0)
        state.groups_of[user] = {f"g{rng.randrange(20)}", f"g{rng.randrange(20)}"}
    roles = sorted(BUILTIN_ROLES)
    for _ in range(1000):
        kind = rng.choice(["user", "group"])
        ugid = rng.choice(users) if kind == "user" else f"g{rng.randrange(20)}"
        path = rng.choice(["/", "/vms", f"/vms/{rng.randrange(100, 2000)}", f"/pool/p{rng.randrange(30)}", "/storage"])
        state.grant(path, kind, ugid, rng.choice(roles), rng.random() < 0.7)
    for vmid in range(100, 2000, 7):
        state.pool_of[f"/vms/{vmid}"] = f"p{vmid % 30}"
    paths = [f"/vms/{rng.randrange(100, 2000)}" for _ in range(20000)]
    start = time.perf_counter()
    for i, path in enumerate(paths):
        privileges(state, users[i % 100], path, now=1.0)
    return len(paths) / (time.perf_counter() - start), len(state.acl)


def listing(env: dict[str, str], vms: int) -> dict[str, float]:
    os.environ.update(env)
    import django

    django.setup()
    from django.test import Client

    from authz import services
    from authz.models import User
    from authz.permissions import has_privileges

    node = env["PVE_NODE_NAME"]
    for start in range(100, 100 + vms, 100):
        submit_raw(
            [
                {
                    "m": "vms.vm",
                    "k": v,
                    "o": "save",
                    "v": 0,
                    "f": {"vmid": v, "node_id": node, "pool_id": None, "config": {"name": f"v{v}"}, "lock": ""},
                }
                for v in range(start, min(start + 100, 100 + vms))
            ]
        )
    root = User.objects.get(userid="root@pam")
    services.add_user("bench@pve", actor=root, password="bench-password")
    services.add_group("benchers", actor=root)
    services.modify_user("bench@pve", actor=root, groups=["benchers"])
    rng = random.Random(2)
    for i in range(500):
        vmid = rng.randrange(100, 100 + vms)
        if i % 2:
            services.modify_acl(root, f"/vms/{vmid}", ["PVEVMUser"], users=["bench@pve"])
        else:
            services.modify_acl(root, f"/vms/{vmid}", ["PVEAuditor"], groups=["benchers"])
    user = User.objects.get(userid="bench@pve")
    start = time.perf_counter()
    checks = 2000
    for i in range(checks):
        has_privileges(user, f"/vms/{100 + i % vms}", ["VM.Audit"])
    live_rate = checks / (time.perf_counter() - start)

    def timed(username: str, password: str) -> tuple[float, int]:
        client = Client()
        data = client.post("/api2/json/access/ticket", {"username": username, "password": password}).json()["data"]
        client.cookies["PVEAuthCookie"] = data["ticket"]
        client.get(f"/api2/json/nodes/{node}/qemu")  # warm
        samples, count = [], 0
        for _ in range(5):
            begin = time.perf_counter()
            response = client.get(f"/api2/json/nodes/{node}/qemu")
            samples.append(time.perf_counter() - begin)
            count = len(json.loads(response.content)["data"])
        return statistics.median(samples), count

    root_s, root_n = timed("root@pam", "test-root-password")
    user_s, user_n = timed("bench@pve", "bench-password")
    # the same user also granted every VM: 10,000 checks, and the same page size as root's
    services.modify_acl(root, "/vms", ["PVEAuditor"], groups=["benchers"])
    all_s, all_n = timed("bench@pve", "bench-password")
    return {
        "live_rate": live_rate,
        "root_s": root_s,
        "root_n": root_n,
        "user_s": user_s,
        "user_n": user_n,
        "all_s": all_s,
        "all_n": all_n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    rate, paths = resolver_rate()
    with tempfile.TemporaryDirectory(prefix="pve-pbench-") as tmp:
        env = {**node_environment(Path(tmp) / "node", node="benchnode"), "PVE_LOG_LEVEL": "ERROR"}
        (Path(tmp) / "node").mkdir()
        manage(env, "migrate", "-v0")
        manage(env, "migrate", "--database", "cluster", "-v0")
        replicator = ReplicatorProcess(env)
        replicator.start()
        try:
            result = listing(env, args.vms)
        finally:
            replicator.stop()
    ratio = result["user_s"] / result["root_s"]
    text = "\n".join(
        [
            heading("Permission checks"),
            "",
            f"Command: {command_line(args, 'vms')} ({os.cpu_count()} CPUs)",
            "",
            f"- Resolver on the in-memory snapshot, 1,000 ACL entries ({paths} paths, 100 users in 20 groups, pools): "
            f"{rate:,.0f} checks/s.",
            f"- `has_privileges` outside a request (a version query per check): {result['live_rate']:,.0f} checks/s.",
            f"- `GET /nodes/<node>/qemu` of {result['root_n']:,} VMs: root@pam {result['root_s'] * 1000:.0f} ms; "
            f"a user with 500 ACL entries (sees {result['user_n']:,}) {result['user_s'] * 1000:.0f} ms; "
            f"ratio {ratio:.2f} (target under 1.5); the same user also granted PVEAuditor on /vms "
            f"(sees {result['all_n']:,}, every VM checked) {result['all_s'] * 1000:.0f} ms, ratio "
            f"{result['all_s'] / result['root_s']:.2f}.",
            "",
        ]
    )
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
