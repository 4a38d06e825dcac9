"""What the Flet baselines share: their command line and how a Flet app is served."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"


def parser(description: str | None) -> argparse.ArgumentParser:
    """The baselines' common flags: `--host`, `--port`."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--host", default=HOST)
    args.add_argument("--port", type=int, required=True)
    return args


def serve_flet(main: Callable[[Any], Any], host: str, port: int) -> None:
    """Serve a Flet app the way Flet's docs show for FastAPI: `flet_web.fastapi.app(main)`
    under uvicorn (its lifespan runs Flet's session manager). `no_cdn`: no internet here."""
    import flet_web.fastapi as flet_fastapi
    import uvicorn

    app = flet_fastapi.app(main, no_cdn=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
