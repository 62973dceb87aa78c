"""A probe evaluator in Python (componentize-py, world `probe-plugin`).

Configuration (JSON, every field optional):

    {"max_latency_ms": 500, "maintenance_marker": "maintenance", "path": "/healthz"}

A server is healthy when it answered 200-399 within `max_latency_ms` and the first bytes of the
body do not contain `maintenance_marker` (a page many applications serve with 200 while they
are being updated). With `path` set, probes go to that path.

Build: componentize-py -d ../../wit -w probe-plugin componentize app -o python-probe.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

_max_latency_ms = 500
_marker = b"maintenance"
_path = None


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global _max_latency_ms, _marker, _path
        try:
            parsed = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"invalid config: {e}")
        _max_latency_ms = int(parsed.get("max_latency_ms", _max_latency_ms))
        _marker = parsed.get("maintenance_marker", "maintenance").encode()
        _path = parsed.get("path")


class ProbeEvaluator(exports.ProbeEvaluator):
    def shape_request(self, pool: str, settings: str, server: str):
        if _path is None:
            return None
        return types.ProbeRequest(path=_path, host=None, headers=[])

    def evaluate(self, response: types.ProbeResponse) -> types.Verdict:
        if response.status is None:
            return types.Verdict(healthy=False, reason=response.error or "no response")
        if not 200 <= response.status <= 399:
            return types.Verdict(healthy=False, reason=f"status {response.status}")
        if response.latency_ms > _max_latency_ms:
            return types.Verdict(
                healthy=False,
                reason=f"slow: {response.latency_ms} ms (limit {_max_latency_ms} ms)",
            )
        if _marker and _marker in bytes(response.body).lower():
            return types.Verdict(healthy=False, reason="in maintenance")
        return types.Verdict(
            healthy=True, reason=f"status {response.status} in {response.latency_ms} ms"
        )
