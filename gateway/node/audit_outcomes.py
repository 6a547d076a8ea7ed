"""Which audit outcome a DataSHIELD command had: `blocked` when a disclosure filter
stopped it, else `failed` (an error) or `returned` (a value left the node).

dsBase, and our dsGatewayBase which follows it, refuse in two ways, and both are
recognised here by their form, since the message texts are what DataSHIELD clients
print and must stay as dsBase words them:

- an R error (`stop(...)`) whose message names a disclosure control: "FAILED: Nvalid
  less than nfilter.tab", "invalid table - invalid counts present", "Subset to be
  created is too small (<nfilter.subset)", "... may be disclosive", the nfilter.kNN and
  nfilter.noise minimums;
- a returned value that is the refusal: a single string "Failed: at least one cell has
  a non-zero count less than nfilter.tab ..." (tableDS), a list flagged
  `disclosure.risk = 1` (glmDS2) or with a `*.invalid` flag set (glmDS1's `y.invalid`,
  `Xpar.invalid`, `glm.saturation.invalid`...), or a list whose `errorMessage` names a
  disclosure control with its matrices emptied (covDS, corDS). The R side (`R_REFUSAL`, run by the
  worker on every aggregate value) picks the candidate text; `returned_refusal` decides.

The label only classifies: it never changes what the client gets. Classifying cannot
fail a command (an R error while looking is no refusal), and a message that merely
looks like a refusal is, for the audit, one: a steward would rather see one call too
many under "blocked" than a refusal hidden among returned values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "OUTCOME_HEADER",
    "R_REFUSAL",
    "AggregateAnswer",
    "command_outcome",
    "failure_outcome",
    "is_disclosure_message",
    "returned_refusal",
]

# Every gateway answer says its audit outcome here, so that the coordinator's relay
# files a relayed call under the station's own outcome (the relay does not pass it on).
OUTCOME_HEADER = "X-DSGateway-Outcome"

# What a disclosure control's message says (dsBase's words, kept by dsGatewayBase).
_DISCLOSURE = re.compile(
    r"disclos|nfilter|privacy|filter threshold|too (few|small|many)|invalid.*(count|cell)"
    r"|^k must be greater than or equal to|'noise' must be greater than or equal to",
    re.IGNORECASE,
)
# A returned string is a refusal only when it also starts as dsBase's refusals do.
_REFUSAL_START = re.compile(r"^\s*(FAILED|ERROR|invalid)\b", re.IGNORECASE)
# How the worker formats an R error: "Error in <call> : <message>" or "Error : <message>".
_R_ERROR = re.compile(r"^Error(?: in .*?)? : (?P<message>.*)$", re.DOTALL)

# R: the candidate refusal text of an aggregate's value, or NA. "risk:" marks a value
# that flags its own disclosure risk (glmDS1, glmDS2), a refusal whatever its message says.
R_REFUSAL = r"""
function(value) tryCatch({
  one <- function(x) is.character(x) && length(x) == 1L && !is.na(x)
  if (one(value)) return(value)
  if (is.list(value)) {
    risk <- value[["disclosure.risk"]]
    if (is.numeric(risk) && length(risk) == 1L && isTRUE(risk >= 1))
      return(paste0("risk:", paste(value[["errorMessage2"]], collapse = "; ")))
    flags <- value[grepl("[.]invalid$", names(value))]
    flagged <- vapply(flags, function(f) is.numeric(f) && any(f > 0, na.rm = TRUE), logical(1))
    if (any(flagged))
      return(paste0("risk:", paste(c(names(flags)[flagged], value[["errorMessage"]]),
                                   collapse = "; ")))
    msg <- value[["errorMessage"]]
    if (one(msg)) return(msg)
  }
  NA_character_
}, error = function(e) NA_character_)
"""


@dataclass(frozen=True)
class AggregateAnswer:
    """What the R worker answers for an aggregate: the serialised value and, when the
    value is a disclosure filter's refusal, its message."""

    data: bytes | str
    refusal: str | None = None


def _message_part(text: str) -> str:
    match = _R_ERROR.match(text.strip())
    return match.group("message") if match else text


def is_disclosure_message(message: str | None) -> bool:
    """Whether an error message is a disclosure control's refusal (the R call the
    worker puts before it is left out: an expression may name `nfilter` itself)."""
    return bool(message) and bool(_DISCLOSURE.search(_message_part(message)))


def failure_outcome(message: str | None) -> str:
    return "blocked" if is_disclosure_message(message) else "failed"


def returned_refusal(candidate: str | None) -> str | None:
    """The refusal message, when `R_REFUSAL`'s candidate text is one; else None."""
    if not candidate:
        return None
    if candidate.startswith("risk:"):
        return candidate[5:] or "The model was refused: disclosure risk."
    if _REFUSAL_START.match(candidate) and _DISCLOSURE.search(candidate):
        return candidate
    return None


def command_outcome(cmd) -> str:
    """The outcome of a finished session command, for the request that reports it."""
    outcome = getattr(cmd, "outcome", None)
    if outcome is not None:
        return outcome
    if cmd.status == "FAILED":
        return failure_outcome(cmd.message)
    return "returned" if cmd.with_result else "ok"
