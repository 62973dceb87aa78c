"""A router plugin in Python (componentize-py, world `router-plugin`).

Configuration (JSON):

    {
      "routes": [
        {"prefix": "/api/", "pool": "api", "settings": "api", "strip_prefix": true}
      ],
      "redirects": {"/old": "/new"},
      "maintenance": false
    }

- `maintenance: true` answers every request 503 itself.
- A path in `redirects` is redirected (308, method and body kept) to its target.
- The first route whose `prefix` starts the path (ignoring case) forwards there, optionally
  without the prefix (`/api/users` -> `/users`), adding `x-routed-by: python`.
- WebSocket handshakes and everything else defer to the gateway's native rules.

Build: componentize-py -d ../../wit -w router-plugin componentize app -o python-router.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

_config = {}


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global _config
        try:
            parsed = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"invalid config: {e}")
        for i, route in enumerate(parsed.get("routes", [])):
            for field in ("prefix", "pool", "settings"):
                if not isinstance(route.get(field), str):
                    raise Err(f"routes[{i}].{field}: a string is required")
        _config = parsed
        host.log(types.LogLevel.INFO, f"{len(parsed.get('routes', []))} routes")


class Router(exports.Router):
    def route(self, request: types.RequestHead) -> types.Decision:
        if _config.get("maintenance"):
            return types.Decision_Respond(
                types.DirectResponse(
                    status=503,
                    headers=[types.Header("retry-after", b"60")],
                    body=b"down for maintenance\n",
                )
            )
        target = _config.get("redirects", {}).get(request.path)
        if target is not None:
            return types.Decision_Redirect(types.Redirect(status=308, location=target))
        if request.websocket:
            return types.Decision_Defer()
        path = request.path.lower()
        for route in _config.get("routes", []):
            prefix = route["prefix"]
            if path.startswith(prefix.lower()):
                rewritten = None
                if route.get("strip_prefix"):
                    rewritten = "/" + request.path[len(prefix):].lstrip("/")
                return types.Decision_Forward(
                    types.Forward(
                        pool=route["pool"],
                        settings=route["settings"],
                        server=None,
                        header_edits=[
                            types.HeaderEdit_Set(types.Header("x-routed-by", b"python"))
                        ],
                        path=rewritten,
                    )
                )
        return types.Decision_Defer()
