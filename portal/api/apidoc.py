"""The API description served: ``/api2/json/openapi.json`` and a page to browse it (``/pve-docs/api-viewer/``).

Both are public, as Proxmox's API viewer is: they describe the API, not anything in it.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.request import Request

from portal.api.openapi import describe
from portal.api.views import PVEAPIView


class OpenAPIView(PVEAPIView):
    """The OpenAPI 3.1 document itself (not in the ``{data: ...}`` envelope: tools read it as it is)."""

    public = True
    proxyto = None
    raw_answer = {"type": "object", "required": ["openapi", "info", "paths"]}

    def get(self, request: Request, **kwargs: Any) -> JsonResponse:
        return JsonResponse(describe(), json_dumps_params={"indent": 1, "sort_keys": False})


def api_viewer(request: HttpRequest) -> HttpResponse:
    """Every path with its methods, permissions and parameters, one page, no script."""
    document = describe()
    entries = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            required = set(body.get("required", []))
            parameters = [
                {"name": p["name"], "where": p["in"], "required": p["required"], "schema": json.dumps(p["schema"])}
                for p in op["parameters"]
            ] + [
                {"name": name, "where": "body", "required": name in required, "schema": json.dumps(schema)}
                for name, schema in body.get("properties", {}).items()
            ]
            entries.append(
                {
                    "path": path,
                    "method": method.upper(),
                    "anchor": op["operationId"],
                    "description": op.get("description", ""),
                    "declared": op.get("x-declared", True),
                    "permissions": json.dumps(op.get("x-permissions")) if "x-permissions" in op else "",
                    "parameters": parameters,
                    "returns": json.dumps(op["responses"]["200"]["content"]["application/json"]["schema"], indent=1),
                }
            )
    return render(request, "portal/api_viewer.html", {"entries": entries, "info": document["info"]})
