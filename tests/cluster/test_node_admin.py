"""The admin pages of nodes and datacenter options write through the cluster services.

A node's address, votes and links are validated as ``pvecm``'s changes are (IP addresses only,
no line break ever reaches corosync.conf or known_hosts), bump corosync.conf's config_version
and are audited with the operator in the same change set; only root@pam changes or removes a
node. Datacenter options are one line each. Bad input is a form error and changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from authz import services
from authz.models import KeyMaterial, User
from cluster.corosync import conf as corosync_conf
from cluster.models import ClusterLogEntry, ClusterSettings, CorosyncConfig, Node
from replicator import client

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]

NODE_URL = "/admin/cluster/node/testnode/change/"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ2x0sbYKc2kFkzY4GowcPH0UAx6Kri4t0ALNI6ChGdH"


def admin_client(username: str = "root@pam", password: str = "test-root-password") -> Client:
    session = Client()
    response = session.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
    assert response.status_code == 302, response.content[:500]
    return session


def loaded_version(session: Client, url: str) -> str:
    page = session.get(url)
    assert page.status_code == 200, page.content[:500]
    return re.search(r'name="_loaded_version" value="(\d+)"', page.content.decode()).group(1)


def _sync() -> None:
    client.wait_mirror(int(client.status()["version"]))


@pytest.fixture
def clustered(etc_dir):
    """The session node as the only member of a cluster for one test, then standalone again."""
    testnode = Node.objects.using("cluster").get(name="testnode")
    original = (testnode.address, testnode.votes, testnode.links)
    corosync_conf.create_cluster("admintest")
    _sync()
    yield etc_dir
    CorosyncConfig.objects.using("cluster").filter(id="corosync").delete()
    Node.objects.using("cluster").filter(name__startswith="na-").delete()
    testnode = Node.objects.using("cluster").get(name="testnode")
    testnode.address, testnode.votes, testnode.links = original
    testnode.save()
    Path(settings.PVE_COROSYNC_CONF).unlink(missing_ok=True)
    _sync()


def _state(etc_dir: Path) -> tuple:
    node = Node.objects.using("cluster").get(name="testnode")
    return (
        client.status()["version"],
        (node.address, node.votes, node.links),
        (etc_dir / "corosync.conf").read_text(),
        (etc_dir / "priv" / "known_hosts").read_text(),
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"address": f"127.0.0.9 {HOST_KEY}\nevil.example.com"}, "an IP address is needed"),
        ({"address": "pve1.example.com"}, "an IP address is needed"),
        ({"links": '{"1": "10.1.0.1\\nring1_addr: 10.9.9.9"}'}, "an IP address is needed"),
        ({"links": '{"9": "10.1.0.1"}'}, "is not 0..7"),
        ({"links": '{"1": "10.1.0.1"}'}, "do not match the cluster"),  # a link the cluster does not have
        ({"links": '["10.1.0.1"]'}, "links must map"),
        ({"votes": "-1"}, "greater than or equal to 0"),
    ],
)
def test_invalid_node_settings_in_the_admin_change_nothing(clustered, fields, message):
    session = admin_client()
    before = _state(clustered)
    post = {"address": "127.0.0.1", "votes": "1", "links": "{}", "_loaded_version": loaded_version(session, NODE_URL)}
    response = session.post(NODE_URL, {**post, **fields})
    assert response.status_code == 200 and message in response.content.decode(), response.content[-3000:]
    _sync()
    assert _state(clustered) == before


def test_a_node_change_is_validated_bumped_and_audited_in_one_change_set(clustered):
    session = admin_client()
    config_version = CorosyncConfig.objects.using("cluster").get(id="corosync").config_version
    response = session.post(
        NODE_URL,
        {"address": " 127.0.0.5 ", "votes": "2", "links": "{}", "_loaded_version": loaded_version(session, NODE_URL)},
    )
    assert response.status_code == 302, response.content[-3000:]
    node = Node.objects.using("cluster").get(name="testnode")
    row = CorosyncConfig.objects.using("cluster").get(id="corosync")
    assert (node.address, node.votes) == ("127.0.0.5", 2)
    assert row.config_version == config_version + 1
    entry = ClusterLogEntry.objects.get(msg__startswith="changing node testnode:")
    assert entry.user == "root@pam" and "address '127.0.0.1' -> '127.0.0.5'" in entry.msg
    assert entry.version == node.version == row.version  # one change set
    _sync()
    tree = (clustered / "corosync.conf").read_text()
    assert "quorum_votes: 2\n    ring0_addr: 127.0.0.5\n" in tree and f"config_version: {config_version + 1}\n" in tree
    assert "testnode,127.0.0.5 " in (clustered / "priv" / "known_hosts").read_text()


def test_only_root_changes_or_removes_a_node(clustered):
    root = User.objects.get(userid="root@pam")
    if not User.objects.filter(userid="na-admin@pve").exists():
        services.add_user("na-admin@pve", actor=root, password="na-admin-password")
    services.modify_acl(root, "/", ["Administrator"], users=["na-admin@pve"])
    corosync_conf.save_nodes(Node(name="na-other", nodeid=77, address="127.0.0.77"))
    session = admin_client("na-admin@pve", "na-admin-password")
    before = _state(clustered)
    page = session.get(NODE_URL)
    assert page.status_code == 200 and b'name="address"' not in page.content  # view only
    refused = session.post(NODE_URL, {"address": "127.0.0.6", "votes": "1", "links": "{}"})
    assert refused.status_code == 403
    assert session.post("/admin/cluster/node/na-other/delete/", {"post": "yes"}).status_code == 403
    assert _state(clustered) == before and Node.objects.using("cluster").filter(name="na-other").exists()


def test_removing_a_node_in_the_admin_is_delnode(clustered):
    session = admin_client()
    corosync_conf.save_nodes(Node(name="na-gone", nodeid=78, address="127.0.0.78"))
    config_version = CorosyncConfig.objects.using("cluster").get(id="corosync").config_version
    myself = session.post("/admin/cluster/node/testnode/delete/", {"post": "yes"}, follow=True)
    assert b"Cannot delete myself from cluster!" in myself.content
    assert Node.objects.using("cluster").filter(name="testnode").exists()
    done = session.post("/admin/cluster/node/na-gone/delete/", {"post": "yes"})
    assert done.status_code == 302
    assert not Node.objects.using("cluster").filter(name="na-gone").exists()
    row = CorosyncConfig.objects.using("cluster").get(id="corosync")
    entry = ClusterLogEntry.objects.get(msg="deleting node na-gone from cluster")
    assert row.config_version == config_version + 1 and entry.user == "root@pam" and entry.version == row.version


def test_datacenter_options_are_one_line_each_and_audited():
    session = admin_client()
    url = "/admin/cluster/clustersettings/datacenter/change/"
    row = ClusterSettings.objects.get(id="datacenter")
    version = client.status()["version"]
    for bad, message in (
        ('{"keyboard": "en-us\\nconsole: vv"}', "one line of printable text"),
        ('{"Bad Key": "x"}', "invalid option name"),
        ('{"keyboard": {"nested": 1}}', "a value is a string or a number"),
    ):
        response = session.post(url, {"options": bad, "_loaded_version": loaded_version(session, url)})
        assert response.status_code == 200 and message in response.content.decode(), bad
    assert client.status()["version"] == version
    assert ClusterSettings.objects.get(id="datacenter").options == row.options
    options = {**row.options, "console": "html5"}
    response = session.post(
        url, {"options": f'{{"keyboard": "{options["keyboard"]}", "console": "html5"}}', "_loaded_version": row.version}
    )
    assert response.status_code == 302, response.content[-2000:]
    saved = ClusterSettings.objects.get(id="datacenter")
    entry = ClusterLogEntry.objects.filter(msg__startswith="datacenter options set:").order_by("-time").first()
    assert saved.options["console"] == "html5" and entry.user == "root@pam" and entry.version == saved.version


def test_rows_written_around_the_services_never_add_a_line(clustered):
    """A node row saved directly (an old admin, a script) with a line break: left out of both files, logged."""
    known_hosts = clustered / "priv" / "known_hosts"
    conf_before = (clustered / "corosync.conf").read_text()
    Node(name="na-raw", nodeid=79, address=f"127.0.0.79\n127.0.0.80 {HOST_KEY}").save()
    KeyMaterial(path="nodes/na-raw/ssh_host.pub", content=HOST_KEY).save()
    datacenter = ClusterSettings.objects.get(id="datacenter")
    datacenter.options = {**datacenter.options, "console": "html5\nmac_prefix: 00:00:00"}
    datacenter.save()
    _sync()
    assert "127.0.0.80" not in known_hosts.read_text() and "na-raw" not in known_hosts.read_text()
    assert (clustered / "corosync.conf").read_text() == conf_before
    assert "mac_prefix" not in (clustered / "datacenter.cfg").read_text()
    datacenter.options = {k: v for k, v in datacenter.options.items() if k != "console"}
    datacenter.save()
    KeyMaterial.objects.get(path="nodes/na-raw/ssh_host.pub").delete()
