"""`python -m gateway.coordinator.relay`: the coordinator's API and its relay listener."""

from gateway.coordinator.relay.serve import relay_command

relay_command(prog_name="python -m gateway.coordinator.relay")
