"""Resource limits of the gateway's R sessions (set in the node config under `limits`)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_sessions: int = 50
    idle_timeout: float = 3600.0  # seconds without a request before a session is closed
    memory_per_session: int = 2048  # MB of address space an R session may add
    command_timeout: float = 600.0  # seconds one command may run
    warm_workers: int = 2  # R processes kept started and waiting for a login
    interrupt_grace: float = 3.0  # seconds R gets to stop after an interrupt before a kill
