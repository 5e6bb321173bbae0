"""A Compose-compatible paid API over a deterministic fake model (no network), for tests and the demo.

with running_demo(devnet) as base_url:     # uvicorn on loopback, paid through a LocalFacilitator
    ...

serve_demo(rpc_url=..., facilitator_key=..., asset=..., pay_to=...)   # blocking, for the CLI
"""

from x402pay.server._demo.app import DemoConfig, demo_api, demo_app, demo_routes, running_demo, serve_demo
from x402pay.server._demo.model import MODEL_NAME, Completion, Meter, complete

__all__ = [
    "MODEL_NAME",
    "Completion",
    "DemoConfig",
    "Meter",
    "complete",
    "demo_api",
    "demo_app",
    "demo_routes",
    "running_demo",
    "serve_demo",
]
