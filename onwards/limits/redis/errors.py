"""The two kinds of Redis failure the limiter treats differently from an outage.

* `RedisMisconfigured`: Redis answered, and what it said means the URL or the credentials are wrong
  (a Sentinel given as redis://, a db other than 0 on a cluster, a wrong password, an unknown
  Sentinel service). Waiting will not fix it; it is reported loudly, once per change.
* `RedirectError`: the node answered "not me" (MOVED, or READONLY after a failover). The call did
  not run; the transport finds the right node and the call is sent again once.
* `AskRedirect`: the gateway's slot is being migrated and a key the call needs is already on the
  importing node (ASK). The call did not run; it is sent once to that node after ASKING, and the
  slot map is left as it is.
* `TryAgainError`: during that migration a call touched keys that are partly on each node
  (TRYAGAIN). The call did not run; it is sent again once after a short pause.
"""

from __future__ import annotations

from redis.exceptions import AuthenticationError, ConnectionError, NoScriptError, ResponseError


class RedisMisconfigured(ConnectionError):
    """Redis cannot be used as configured; the message is one line naming the problem."""


class _NamesNode(ResponseError):
    """A reply that names the node to go to."""

    @property
    def address(self) -> tuple[str, int] | None:
        """The node named by a MOVED or ASK reply ("MOVED 3999 127.0.0.1:6381")."""
        parts = str(self).split()
        if len(parts) >= 3 and parts[0] in ("MOVED", "ASK"):
            host, _, port = parts[2].rpartition(":")
            if host and port.isdigit():
                return host.strip("[]"), int(port)
        return None


class RedirectError(_NamesNode):
    """MOVED or READONLY: the command went to a node that does not own its keys."""


class AskRedirect(_NamesNode):
    """ASK: this one call must go to the named (importing) node, after ASKING."""


class TryAgainError(ResponseError):
    """TRYAGAIN: the call's keys are split between the two nodes of a slot migration."""


# Replies that mean the call did not run and may be sent once more (see the limiter's _resend).
NOT_RUN = (NoScriptError, RedirectError, AskRedirect, TryAgainError)


def misconfiguration(exc: BaseException) -> str | None:
    """The one-line problem when `exc` means misconfiguration rather than an outage."""
    if isinstance(exc, RedisMisconfigured | AuthenticationError):
        return " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ResponseError):
        text = str(exc)
        if (
            text.startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
            or "SELECT is not allowed in cluster mode" in text
        ):
            return " ".join(text.split())
    return None
