"""The one exception family the federated algorithms raise."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DataSHIELDError", "NodeError"]


class DataSHIELDError(Exception):
    """Base class of the errors raised by `algorithms`."""


class NodeError(DataSHIELDError):
    """One or more nodes refused or failed a server call.

    ``failures`` maps each failing node's name to its message, as the node gave it
    (a disclosure refusal such as ``Subset to be created is too small (<nfilter.subset)``,
    or any other error); ``call`` names the server function.
    """

    def __init__(self, failures: Mapping[str, str], call: str | None = None):
        self.failures = dict(failures)
        self.call = call
        super().__init__(self._describe())

    @property
    def nodes(self) -> list[str]:
        return list(self.failures)

    def _describe(self) -> str:
        what = self.call or "the DataSHIELD call"
        if len(self.failures) == 1:
            ((node, message),) = self.failures.items()
            return f"{what} failed on node '{node}': {message}"
        lines = [f"{what} failed on {len(self.failures)} nodes:"]
        lines += [f"  {node}: {message}" for node, message in self.failures.items()]
        return "\n".join(lines)
