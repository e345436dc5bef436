"""``/cluster/ha``: no resource is HA-managed here; a VM looked up answers Proxmox's "no such resource"
(what Terraform expects of an unmanaged VM), after the Sys.Audit check."""

from __future__ import annotations

import pytest

from tests.api_client import API, logged_in, users_with_grants

pytestmark = [pytest.mark.usefixtures("replicator")]


def test_ha_resources_answer_as_for_an_unmanaged_vm():
    users_with_grants(("ha-nobody@pve",), "ha-password", [])
    root, nobody = logged_in(), logged_in("ha-nobody@pve", "ha-password")
    assert root.get(f"{API}/cluster/ha/resources").json() == {"data": []}
    missing = root.get(f"{API}/cluster/ha/resources/vm:100")
    assert missing.status_code == 500 and missing.reason_phrase == "no such resource 'vm:100'"
    assert root.get(f"{API}/cluster/ha/resources/100").json()["message"].strip() == "no such resource 'vm:100'"
    assert root.get(f"{API}/cluster/ha/resources/x:y").status_code == 400
    assert nobody.get(f"{API}/cluster/ha/resources/vm:100").status_code == 403
    assert nobody.get(f"{API}/cluster/ha/resources").status_code == 403
