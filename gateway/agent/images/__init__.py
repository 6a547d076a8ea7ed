"""Client images at the node: the data steward's approvals (`ImagePolicy`) and the runner
that runs an approved image under Docker with the gateway as its only way out
(`ImageRunner`). See docs/client-images.md for the contract an image follows and
docs/data-stewards-images.md for approving images.

The agent's entry point is `ImageExecutor` (gateway.agent.images.executor), which turns a
work item of kind "image" into a `RunRequest` and the `RunResult` into a `RunOutcome`.
Only the policy and the data types import without the Docker SDK; the runner needs the
`images` extra (`pip install dsgateway[images]`).
"""

from gateway.agent.images.contract import (
    OutputFile,
    RunLimits,
    RunRequest,
    RunResult,
    RunStatus,
)
from gateway.agent.images.policy import (
    Approval,
    ApprovalEvent,
    Decision,
    ImagePolicy,
    PolicyError,
)
from gateway.agent.images.references import (
    ImageReference,
    InvalidReference,
    check_digest,
    parse_reference,
)

__all__ = [
    "Approval",
    "ApprovalEvent",
    "Decision",
    "ImagePolicy",
    "ImageReference",
    "InvalidReference",
    "OutputFile",
    "PolicyError",
    "RunLimits",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "check_digest",
    "parse_reference",
]
