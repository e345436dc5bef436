"""proxmoxer (the client most Proxmox automation is built on) against the session node's real HTTPS
server and worker: login and a wrong password, an API token, nextid, create, task polling with
``Tasks.blocking_status``, typed config read-back, cluster resources, start/status/stop, template,
clone, delete, and the errors it raises for a missing VM and bad parameters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from authz import services
from authz.models import APIToken, User
from tests.webserver import WebServer, serving
from vms.models import VM
from vms.qemu import process

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
NODE = "testnode"
PASSWORD = "test-root-password"


@pytest.fixture(scope="module")
def web(node_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with serving(node_env, tmp_path_factory.mktemp("web")) as server:
        yield server


def connect(web: WebServer, **credentials: str) -> ProxmoxAPI:
    return ProxmoxAPI("127.0.0.1", port=web.port, verify_ssl=str(web.ca), timeout=60, **credentials)


@pytest.fixture(scope="module")
def px(web: WebServer) -> ProxmoxAPI:
    return connect(web, user="root@pam", password=PASSWORD)


@pytest.fixture(scope="module")
def vmids(px: ProxmoxAPI) -> Iterator[list[int]]:
    made: list[int] = []
    yield made
    for vmid in made:
        process.terminate(vmid, timeout=5, log=lambda line: None)
        process.cleanup(vmid, {})
        for vm in VM.objects.filter(vmid=vmid):
            vm.delete()


def wait(px: ProxmoxAPI, upid: str) -> dict:
    status = Tasks.blocking_status(px, upid, timeout=120, polling_interval=0.2)
    assert status is not None and status["status"] == "stopped", status
    return status


def test_login_and_a_wrong_password(web, px):
    assert "version" in px.version.get()
    with pytest.raises(AuthenticationError):
        connect(web, user="root@pam", password="not-the-password")


def test_an_api_token(web):
    root = User.objects.get(userid="root@pam")
    if APIToken.objects.filter(tokenid="root@pam!pxtest").exists():
        services.delete_token("root@pam!pxtest", actor=root)
    _row, secret = services.add_token("root@pam", "pxtest", actor=root, privsep=False)
    try:
        by_token = connect(web, user="root@pam", token_name="pxtest", token_value=secret)
        assert any(node["node"] == NODE for node in by_token.nodes.get())
        with pytest.raises(ResourceException) as refused:
            connect(web, user="root@pam", token_name="pxtest", token_value="0" * 36).version.get()
        assert refused.value.status_code == 401
    finally:
        services.delete_token("root@pam!pxtest", actor=root)


def test_a_vm_life_as_automation_drives_it(px, vmids):
    vmid = int(px.cluster.nextid.get())
    vmids.append(vmid)
    upid = px.nodes(NODE).qemu.post(vmid=vmid, name="px-vm", memory=128, cores=1, onboot=0)
    assert wait(px, upid)["exitstatus"] == "OK"
    config = px.nodes(NODE).qemu(vmid).config.get()
    assert config["name"] == "px-vm" and config["cores"] == 1 and config["onboot"] == 0
    assert config["memory"] == "128"  # a property string since Proxmox VE 8.1 ([current=]<MiB>)
    assert "digest" in config
    listed = {entry["vmid"]: entry for entry in px.cluster.resources.get(type="vm")}
    assert listed[vmid]["node"] == NODE and listed[vmid]["template"] == 0
    assert listed[vmid]["status"] in ("stopped", "unknown")  # unknown until a status collector has seen it

    assert wait(px, px.nodes(NODE).qemu(vmid).status.start.post())["exitstatus"] == "OK"
    current = px.nodes(NODE).qemu(vmid).status.current.get()
    assert current["status"] == "running" and current["qmpstatus"] == "running" and current["pid"] > 0
    assert wait(px, px.nodes(NODE).qemu(vmid).status.stop.post())["exitstatus"] == "OK"
    assert px.nodes(NODE).qemu(vmid).status.current.get()["status"] == "stopped"

    px.nodes(NODE).qemu(vmid).config.put(description="set by proxmoxer", cores=2)
    assert px.nodes(NODE).qemu(vmid).config.get()["cores"] == 2

    template = px.nodes(NODE).qemu(vmid).template.post()
    if isinstance(template, str) and template.startswith("UPID:"):
        assert wait(px, template)["exitstatus"] == "OK"
    assert px.nodes(NODE).qemu(vmid).config.get()["template"] == 1
    clone = int(px.cluster.nextid.get())
    vmids.append(clone)
    assert wait(px, px.nodes(NODE).qemu(vmid).clone.post(newid=clone, name="px-clone"))["exitstatus"] == "OK"
    assert px.nodes(NODE).qemu(clone).config.get()["name"] == "px-clone"

    for each in (clone, vmid):
        assert wait(px, px.nodes(NODE).qemu(each).delete(purge=1))["exitstatus"] == "OK"
    assert not VM.objects.filter(vmid__in=[vmid, clone]).exists()


def test_errors_as_proxmoxer_raises_them(px):
    with pytest.raises(ResourceException) as missing:
        px.nodes(NODE).qemu(999999).config.get()
    assert missing.value.status_code == 500 and "does not exist" in missing.value.content
    with pytest.raises(ResourceException) as bad:
        px.nodes(NODE).qemu.post(vmid=120, memory="lots")
    assert bad.value.status_code == 400 and "memory" in bad.value.errors
    existing = VM.objects.filter(node_id=NODE).first()
    if existing is not None:
        with pytest.raises(ResourceException) as taken:
            px.nodes(NODE).qemu.post(vmid=existing.vmid)
        assert taken.value.status_code == 500
        assert taken.value.content == f"VM {existing.vmid} already exists on node '{NODE}'"
