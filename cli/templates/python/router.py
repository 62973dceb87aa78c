"""The {{name}} router (componentize-py, world `router-plugin`).

Requests with `x-beta: 1` go to the beta pool (named by the plugin's `config` string),
`/healthz` is answered by the gateway itself, and everything else is left to the gateway's
native rules. The types (wit_world, generated from wit/plugin.wit) are in bindings/ after
`wasmgate plugin build`, for editors and type checkers.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

_beta_pool = ""


def header(request: types.RequestHead, name: str) -> str | None:
    """The first value of a request header, as text (values arrive as bytes)."""
    for h in request.headers:
        if h.name == name:
            return h.value.decode("latin-1").strip()
    return None


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global _beta_pool
        if not config.strip():
            raise Err("config: the name of the beta pool is required")
        _beta_pool = config.strip()
        host.log(types.LogLevel.INFO, f"beta traffic goes to pool {_beta_pool}")


class Router(exports.Router):
    def route(self, request: types.RequestHead) -> types.Decision:
        if request.path == "/healthz":
            return types.Decision_Respond(
                types.DirectResponse(
                    status=200,
                    headers=[types.Header("content-type", b"text/plain")],
                    body=b"ok\n",
                )
            )
        if header(request, "x-beta") == "1":
            return types.Decision_Forward(
                types.Forward(
                    pool=_beta_pool,
                    settings="web",
                    server=None,
                    header_edits=[types.HeaderEdit_Set(types.Header("x-routed-by", b"{{name}}"))],
                    path=None,
                )
            )
        return types.Decision_Defer()
