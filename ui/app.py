"""The ASGI app of one server process: the counter page, served by `counter_service.app`."""

from __future__ import annotations

from fastapi import FastAPI

import counter_service
from counter_service import Settings
from ui.page import main


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for one server process (settings default to the environment)."""
    return counter_service.app(main, settings=settings)
