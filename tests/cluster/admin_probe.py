"""Run inside a lab node's namespace: log in to the node's admin over HTTPS and save a change form.

Arguments: base URL, CA file, user, password, change-form path, then ``field=value`` pairs to
post. Prints JSON: the login status, the form page status and the messages shown after saving.
"""

from __future__ import annotations

import json
import re
import sys

import requests


def main() -> dict[str, object]:
    base, ca, user, password, path, *pairs = sys.argv[1:]
    session = requests.Session()
    session.trust_env = False  # no proxy: the node is on the lab network
    page = session.get(f"{base}/admin/login/", verify=ca, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    login = session.post(
        f"{base}/admin/login/",
        data={"csrfmiddlewaretoken": token, "username": user, "password": password, "next": "/admin/"},
        headers={"Referer": f"{base}/admin/login/"},
        verify=ca,
        timeout=30,
    )
    form = session.get(f"{base}{path}", verify=ca, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    loaded = re.search(r'name="_loaded_version" value="(\d+)"', form.text)
    data = dict(pair.split("=", 1) for pair in pairs)
    data.update({"csrfmiddlewaretoken": token, "_loaded_version": loaded.group(1) if loaded else ""})
    saved = session.post(f"{base}{path}", data=data, headers={"Referer": f"{base}{path}"}, verify=ca, timeout=60)
    messages = re.findall(r'<li class="(?:error|success|warning|info)">(.*?)</li>', saved.text, re.DOTALL)
    return {"login": login.status_code, "form": form.status_code, "saved": saved.status_code, "messages": messages}


if __name__ == "__main__":
    print(json.dumps(main()))
