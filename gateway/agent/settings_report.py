"""The station's profiles, disclosure settings and agent policy, reported to the
coordinator.

The coordinator cannot change them (they live in the gateway's node.yaml, `profiles:`,
and the agent's agent.yaml, `policy:`), but data stewards and researchers of the
collaboration should see what the station enforces. The agent reports them when it
starts, and after a reconnect if they differ from what it last reported
(`PUT /api/node/settings`, docs/console.md).

What is reported, per profile: its name, the DataSHIELD packages it serves (name and
version), the package whitelist (`packages:`, null for every package) and blacklist
of node.yaml, how many aggregate and assign methods it offers, and its effective
disclosure settings: each `nfilter.*` and `datashield.privacy*` option as a session
sees it (the profile's own value over the packages' `default.` one), with where the
value came from. Every other option is named under `withheld`, never with its value:
an allowlist, so a secret option (`datashield.seed`, whose knowledge lets a researcher
remove the noise) or one nobody thought of cannot leave the station. node.yaml's paths,
users, passwords and keys are not looked at at all.

The agent's policy (`policy`) is reported as the agent applies it, after defaults:
`collaborations`, `users` and `algorithms` each a sorted list or null for any ("*"),
`projects` a sorted list, `profile` a name. Nothing else of agent.yaml is reported (not
the name of the key's variable, not the coordinator's address, not `images:`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from gateway.agent.config import Policy
from gateway.agent.link import CoordinatorLink, Rejected

__all__ = ["DISCLOSURE_SETTING", "SettingsReport", "policy_report", "station_settings"]

log = logging.getLogger(__name__)

# The options whose values are reported. The coordinator refuses any other name
# (gateway/coordinator/schemas.py uses this same pattern).
DISCLOSURE_SETTING = r"^(nfilter\.[A-Za-z0-9._]{1,100}|datashield\.privacy[A-Za-z0-9._]{0,64})$"
_DISCLOSURE = re.compile(DISCLOSURE_SETTING)
_DEFAULT = "default."


def profile_settings(options: dict[str, str], own: dict[str, str]) -> tuple[list, list]:
    """(settings, withheld) of one profile: `options` are its effective R options
    (packages' declarations merged, then the profile's own `own` over them)."""
    values: dict[str, dict[str, str]] = {}
    withheld: set[str] = set()
    # A package default first, so that a plain option of the same setting replaces it
    # (as dsBase and dsGatewayBase read them: getOption(x), else getOption("default.x")).
    for key in sorted(options, key=lambda k: not k.startswith(_DEFAULT)):
        setting = key[len(_DEFAULT) :] if key.startswith(_DEFAULT) else key
        if not _DISCLOSURE.match(setting):
            withheld.add(key)
            continue
        source = "profile" if key in own else "package"
        values[setting] = {"name": setting, "value": options[key], "source": source}
    return [values[n] for n in sorted(values)], sorted(withheld)


def policy_report(policy: Policy) -> dict[str, Any]:
    """The agent's policy as it is checked (gateway/agent/executors.py, relay.py)."""

    def listed(values):
        return None if values is None else sorted(values)

    return {
        "collaborations": listed(policy.collaborations),
        "users": listed(policy.users),
        "algorithms": listed(policy.algorithms),
        "projects": sorted(policy.projects),
        "profile": policy.profile,
    }


def station_settings(services: Any, policy: Policy | None = None) -> dict[str, Any]:
    """The report's body from a gateway's services (`app.extensions["dsgateway"]`) and
    the agent's policy (None: not reported)."""
    registry, config = services.registry, services.config
    profiles = []
    for name in registry.profiles:
        declared = config.profiles[name]
        settings, withheld = profile_settings(registry.options(name), declared.options)
        profiles.append(
            {
                "name": name,
                "packages": [
                    {"name": p.name, "version": p.version} for p in registry.packages(name)
                ],
                "package_whitelist": (
                    None if declared.packages is None else list(declared.packages)
                ),
                "blacklist": list(declared.blacklist),
                "methods": {
                    kind: len(registry.methods(name, kind)) for kind in ("aggregate", "assign")
                },
                "settings": settings,
                "withheld": withheld,
            }
        )
    body: dict[str, Any] = {"profiles": profiles}
    if policy is not None:
        body["policy"] = policy_report(policy)
    return body


class SettingsReport:
    """Sends the station's settings when they differ from what was last accepted.

    `report()` is called by the agent each time it (re)registers with the coordinator:
    at start, and after a reconnect (a coordinator that lost them gets them again only
    if they changed; node.yaml is read when the station starts)."""

    def __init__(self, link: CoordinatorLink, collect: Callable[[], dict[str, Any]]):
        self.link = link
        self.collect = collect
        self._sent: dict[str, Any] | None = None

    @classmethod
    def for_gateway(
        cls, link: CoordinatorLink, app: Any, policy: Policy | None = None
    ) -> SettingsReport | None:
        """For a station with a gateway app and its agent's policy; None without a
        gateway (no profiles: nothing to report)."""
        if app is None:
            return None
        return cls(link, lambda: station_settings(app.extensions["dsgateway"], policy))

    def report(self) -> bool:
        """Send the settings if they changed; True if sent. A link fault (LinkDown)
        goes to the caller, which retries when it reconnects; a refusal is logged and
        not retried until they change (a coordinator without the endpoint, a bug)."""
        try:
            body = self.collect()
        except Exception:  # a bug here must not keep the station from taking work
            log.exception("the station's settings could not be read; not reported")
            return False
        if body == self._sent:
            return False
        try:
            self._send(body)
        except Rejected as err:
            log.warning("the coordinator refused the station's settings: %s", err)
            self._sent = body
            return False
        self._sent = body
        log.info("reported the station's settings (%d profiles)", len(body["profiles"]))
        return True

    def _send(self, body: dict[str, Any]) -> None:
        try:
            self.link._call("PUT", "/node/settings", json=body)
        except Rejected as err:
            # A coordinator older than the policy report refuses the unknown field (and
            # any coordinator a policy value it does not take), and with it the whole
            # report: the profiles are still worth showing.
            if err.status != 400 or "policy" not in body:
                raise
            log.warning(
                "the coordinator refused the station's settings with its policy (%s); "
                "reporting them without it",
                err,
            )
            self.link._call(
                "PUT", "/node/settings", json={k: v for k, v in body.items() if k != "policy"}
            )
