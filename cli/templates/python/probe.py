"""The {{name}} probe evaluator (componentize-py, world `probe-plugin`).

A server is healthy when it answers 200-399 and its body does not contain the marker given as
the plugin's `config` string (default "maintenance"), a page many applications serve with 200
while they are being updated.
"""

from wit_world import exports
from wit_world.imports import types

_marker = b"maintenance"


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global _marker
        if config.strip():
            _marker = config.strip().encode()


class ProbeEvaluator(exports.ProbeEvaluator):
    def shape_request(self, pool: str, settings: str, server: str) -> types.ProbeRequest | None:
        return None

    def evaluate(self, response: types.ProbeResponse) -> types.Verdict:
        if response.status is None:
            return types.Verdict(healthy=False, reason=response.error or "no response")
        if not 200 <= response.status <= 399:
            return types.Verdict(healthy=False, reason=f"status {response.status}")
        if _marker in response.body:
            return types.Verdict(healthy=False, reason=f"the body says {_marker.decode()!r}")
        return types.Verdict(healthy=True, reason=f"status {response.status}")
