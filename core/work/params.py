"""The keys of a ``work submit`` request that are not work parameters.

One list for the node, which hands every other key of a submit to the work type
(:func:`split_params`), and for ``mesh work submit``, which refuses these
names as ``--param`` (:func:`is_reserved_param`).  No imports: the CLI loads it.
"""

from __future__ import annotations

from typing import Any

#: Receptor's control keys of a submit: every other key is a work parameter.
CONTROL_KEYS = ("command", "subcommand", "node", "worktype", "tlsclient", "ttl", "signwork",
                "signature")
#: The one control key ``--param`` may set: a work signature made elsewhere is sent as is.
PASSED_THROUGH = "signature"


def is_reserved_param(key: str) -> bool:
    """True if ``mesh work submit`` refuses ``--param KEY=...`` (the CLI sets that key itself,
    or it is no work parameter); case-insensitive."""
    return key.lower() in CONTROL_KEYS and key.lower() != PASSED_THROUGH


def split_params(params: dict[str, Any]) -> dict[str, str]:
    """The work parameters of a submit request (every key that is not a control key)."""
    return {k: v for k, v in params.items() if k not in CONTROL_KEYS}
