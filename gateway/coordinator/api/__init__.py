"""The coordinator's HTTP API: one blueprint per resource, all under /api."""

from __future__ import annotations

from flask import Flask

__all__ = ["register_blueprints"]


def register_blueprints(app: Flask) -> None:
    from gateway.coordinator.api import (
        audit,
        auth,
        collaborations,
        images,
        node_link,
        nodes,
        openapi,
        organizations,
        tasks,
        users,
    )

    for module in (
        auth,
        organizations,
        users,
        collaborations,
        nodes,
        tasks,
        audit,
        node_link,
        images,
        openapi,
    ):
        app.register_blueprint(module.bp, url_prefix="/api")
