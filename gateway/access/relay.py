"""Federation: a central gateway acting for one of its users on a district gateway.

The central gateway's service account sends ``X-Citygate-On-Behalf-Of: alice@central``;
the district honours it only when the account's role has ``federation.relay``, and then
every audit entry written while serving that request carries ``on_behalf_of`` =
``"central:alice via central"`` in its detail, so both ends name the person.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.access.control import AccessControl
    from gateway.access.guard import Principal

ON_BEHALF_HEADER = "X-Citygate-On-Behalf-Of"
RELAY_ACTION = "federation.relay"
#: The central user a request is served for (set per request task by the access middleware).
ON_BEHALF_OF: ContextVar[str | None] = ContextVar("citygate_on_behalf_of", default=None)
_PART = re.compile(r"^[A-Za-z0-9._@+-]{1,100}$")


def on_behalf_text(value: str | None, principal: Principal, access: AccessControl) -> str | None:
    """``central:alice via node`` for ``alice@node`` from an account whose role has
    ``federation.relay``; None for anyone else or a malformed value."""
    if not value:
        return None
    user, sep, node = value.strip().rpartition("@")
    if not sep or not _PART.match(user) or not _PART.match(node):
        return None
    if not access.policy.may_sometimes(access.subject(principal), RELAY_ACTION, [], 0.0):
        return None
    return f"central:{user} via {node}"
