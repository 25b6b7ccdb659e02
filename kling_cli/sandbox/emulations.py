"""The registry of provider emulations the sandbox serves: name (its path prefix) -> `Emulation`.

Assembled here, apart from the core, so that each emulation module imports the core and the core imports
none of them.
"""

from __future__ import annotations

from kling_cli.sandbox import acedata_api, aigw_api, cometapi_api, kling_api, newapi_api
from kling_cli.sandbox.core import Emulation

EMULATIONS: dict[str, Emulation] = {
    name: Emulation(module.router, module.callback_payload)
    for name, module in (("kling", kling_api), ("cometapi", cometapi_api), ("newapi", newapi_api),
                         ("acedata", acedata_api), ("aigw", aigw_api))
}
#: upstream new-api, a gateway of the `newapi` dialect without motion control
EMULATIONS["newapi-upstream"] = Emulation(newapi_api.upstream_router, newapi_api.callback_payload)
