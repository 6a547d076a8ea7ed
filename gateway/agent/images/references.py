"""Image references and digests, parsed strictly.

A reference is what a researcher writes: `registry.example.org/team/analysis:1.2`,
`analysis@sha256:<64 hex>`, `analysis:1.2@sha256:<64 hex>`, or a bare digest
`sha256:<64 hex>`. Only the digest pins content: a tag can be moved to other content at
any time, so a node decides and runs by digest only and treats a tag as a label.

Two SHA-256 content addresses name an image:
- the *repository digest* (manifest digest) a registry gives, `repo@sha256:...`; Docker
  checks the pulled content against it;
- the *image ID*, the digest of the image's configuration, which lists the digest of
  every layer; it is what `docker build` and `docker load` give when no registry is
  involved (`docker inspect --format '{{.Id}}'`).
A steward may approve either; the runner accepts a local image when the approved digest
is its image ID or one of its repository digests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DIGEST_PATTERN",
    "ImageReference",
    "InvalidReference",
    "check_digest",
    "parse_reference",
]

DIGEST_PATTERN = r"sha256:[0-9a-f]{64}"
_DIGEST = re.compile(rf"^{DIGEST_PATTERN}$")
# Docker's grammar (distribution/reference), simplified: lowercase path components
# separated by `/`, an optional registry host[:port] first, an optional tag.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?)"
_NAME = re.compile(rf"^(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


class InvalidReference(ValueError):
    """Not an image reference or digest this node accepts; the message says why."""


@dataclass(frozen=True)
class ImageReference:
    repository: str | None  # None for a bare digest
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = self.repository or ""
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text = f"{text}@{self.digest}" if text else self.digest
        return text

    @property
    def pinned(self) -> bool:
        return self.digest is not None


def check_digest(digest: str) -> str:
    """`digest` if it is `sha256:` and 64 lowercase hex digits, else InvalidReference."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidReference(
            f"{digest!r} is not an image digest: expected sha256: and 64 lowercase hex digits."
        )
    return digest


def parse_reference(ref: str) -> ImageReference:
    if not isinstance(ref, str) or not ref or len(ref) > 512 or ref.strip() != ref:
        raise InvalidReference(f"{ref!r} is not an image reference.")
    if ref.startswith("sha256:"):
        return ImageReference(None, None, check_digest(ref))
    name, at, digest = ref.partition("@")
    if at:
        check_digest(digest)
    else:
        digest = None
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:  # a colon after the last slash is a tag (before it, a port)
        name, _, tag = name.rpartition(":")
        if not _TAG.match(tag):
            raise InvalidReference(f"{ref!r}: {tag!r} is not a valid tag.")
    if not _NAME.match(name):
        raise InvalidReference(f"{ref!r}: {name!r} is not a valid repository name.")
    return ImageReference(name, tag, digest)
