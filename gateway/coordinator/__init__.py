"""The coordinator: collaborations, nodes, tasks and results of a federation.

`create_app(test_config=None)` is the app factory; see docs/coordinator.md.
"""

from gateway.coordinator.app import create_app

__all__ = ["create_app"]
