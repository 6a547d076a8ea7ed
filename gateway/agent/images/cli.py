"""The data steward's commands for client images at a station (a click group, meant to
be attached as `dsgateway node images`):

    images approve sha256:... --reason "reviewed v1.2" [--image reg.org/ana:1.2]
                              [--collaboration 3 ...] [--by dana]
    images reject  sha256:... --reason "..."
    images revoke  sha256:... --reason "..."
    images restrict sha256:... --collaboration 3 --collaboration 4 | --any  --reason "..."
    images list [--state approved]          images history [sha256:...]
    images check reg.org/ana:1.2@sha256:... [--collaboration 3]

The store is `images.db` in the node's state directory (`--config node.yaml` reads
`state_dir` from the gateway's configuration, or give `--state-dir`); every change is
also written to the node's audit log there. `--by` defaults to the login name.
Output is JSON, one object per line, for scripts and for people.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

__all__ = ["images"]


def _store(ctx: click.Context):
    from gateway.agent.images.policy import ImagePolicy
    from gateway.node.audit import AuditLog

    state_dir = _state_dir(ctx.obj)
    audit = AuditLog(state_dir / "audit.log")
    ctx.call_on_close(audit.close)
    policy = ImagePolicy.in_state_dir(state_dir, audit)
    ctx.call_on_close(policy.close)
    return policy


def _emit(value) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def _do(action):
    from gateway.agent.images.policy import PolicyError

    try:
        return action()
    except PolicyError as err:
        raise click.ClickException(str(err)) from None


@click.group()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    help="The gateway's node.yaml (its state_dir holds the store).",
)
@click.option("--state-dir", type=click.Path(file_okay=False), help="The node's state directory.")
@click.pass_context
def images(ctx: click.Context, config_file: str | None, state_dir: str | None) -> None:
    """Client images: which digests may run at this station."""
    # Resolved when a subcommand opens the store, not here: `images approve --help`
    # must work without naming a store.
    ctx.ensure_object(dict).update(config_file=config_file, state_dir=state_dir)


def _state_dir(obj: dict) -> Path:
    config_file, state_dir = obj.get("config_file"), obj.get("state_dir")
    if bool(config_file) == bool(state_dir):
        raise click.UsageError("Give either --config node.yaml or --state-dir DIR.")
    if config_file:
        from gateway.node.config import ConfigError, NodeConfig

        try:
            return Path(NodeConfig.from_file(config_file).state_dir)
        except ConfigError as err:
            raise click.ClickException(str(err)) from None
    return Path(state_dir)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without passwd entry)
        return ""


_by = click.option("--by", default=_login_name, show_default="login name", help="Who decides.")
_reason = click.option("--reason", required=True, help="Why (kept with the decision).")
_collaborations = click.option(
    "--collaboration",
    "collaborations",
    type=int,
    multiple=True,
    help="A collaboration id the image may run for (repeat; none: any collaboration).",
)


@images.command()
@click.argument("digest")
@_reason
@_by
@click.option("--image", help="The reference you reviewed (for people; the digest decides).")
@_collaborations
@click.pass_context
def approve(ctx, digest, reason, by, image, collaborations) -> None:
    """Let DIGEST run here."""
    policy = _store(ctx)
    approval = _do(
        lambda: policy.approve(
            digest, by=by, reason=reason, image=image, collaborations=collaborations or None
        )
    )
    _emit(approval.to_dict())


@images.command()
@click.argument("digest")
@_reason
@_by
@click.option("--image", help="The reference you reviewed.")
@click.pass_context
def reject(ctx, digest, reason, by, image) -> None:
    """Refuse DIGEST here (its runs end "not approved" with your reason)."""
    policy = _store(ctx)
    _emit(_do(lambda: policy.reject(digest, by=by, reason=reason, image=image)).to_dict())


@images.command()
@click.argument("digest")
@_reason
@_by
@click.pass_context
def revoke(ctx, digest, reason, by) -> None:
    """Withdraw the approval of DIGEST: no new run starts from now on."""
    policy = _store(ctx)
    _emit(_do(lambda: policy.revoke(digest, by=by, reason=reason)).to_dict())


@images.command()
@click.argument("digest")
@_collaborations
@click.option("--any", "any_collaboration", is_flag=True, help="Any collaboration.")
@_reason
@_by
@click.pass_context
def restrict(ctx, digest, collaborations, any_collaboration, reason, by) -> None:
    """Set the collaborations an approved DIGEST may run for."""
    if bool(collaborations) == any_collaboration:
        raise click.UsageError("Give --collaboration ID (one or more) or --any.")
    policy = _store(ctx)
    chosen = None if any_collaboration else collaborations
    _emit(_do(lambda: policy.restrict(digest, chosen, by=by, reason=reason)).to_dict())


@images.command(name="list")
@click.option("--state", type=click.Choice(["approved", "rejected", "revoked"]))
@click.pass_context
def list_(ctx, state) -> None:
    """The current decision on each digest."""
    for approval in _store(ctx).approvals(state):
        _emit(approval.to_dict())


@images.command()
@click.argument("digest", required=False)
@click.pass_context
def history(ctx, digest) -> None:
    """Every decision, oldest first (of DIGEST only, if given)."""
    policy = _store(ctx)
    for event in _do(lambda: policy.history(digest)):
        _emit(event.to_dict())


@images.command()
@click.argument("image")
@click.option("--digest", help="The digest the run is pinned to, if IMAGE has none.")
@click.option("--collaboration", type=int, help="The collaboration of the run.")
@click.pass_context
def check(ctx, image, digest, collaboration) -> None:
    """Would a run of IMAGE be allowed here? Exit status 1 if not."""
    decision = _store(ctx).check(image, digest, collaboration)
    _emit({"allowed": decision.allowed, "reason": decision.reason, "digest": decision.digest})
    if not decision.allowed:
        ctx.exit(1)


if __name__ == "__main__":  # python -m gateway.agent.images.cli ...
    images()
