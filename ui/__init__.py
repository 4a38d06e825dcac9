"""The thin Flet front end and the ASGI app that serves it."""

from ui.app import create_app

__all__ = ["create_app"]
