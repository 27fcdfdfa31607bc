"""What one request carries from stage to stage: the outcome it reports, the exchange record the
stages share, and the signal that the client has gone. Records only; the rules live in the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import Scope, Send

if TYPE_CHECKING:
    from onwards.gateway import Gateway
    from onwards.proxy.intake import Intake
    from onwards.proxy.metering import Meter
    from onwards.proxy.permits import Permits
    from onwards.proxy.watch import DisconnectWatch


class ClientGone(Exception):
    """The client disconnected; nothing more can be sent."""


@dataclass(slots=True)
class Outcome:
    """What the access log and the metrics say about one request."""

    target: str = "unknown"
    provider: str = ""
    attempts: int = 0
    limiter: str = "none"  # none | allowed | refused:<scope>:<kind> | degraded | unavailable
    key: str = ""  # the key definition's name, never the token
    bytes_out: int = 0  # response body bytes handed to the server
    model: str = ""  # the configured alias counted in onwards_model_inflight until the end
    span: Any = None  # the request's trace span, when trace export is on
    error: str = ""
    prompt_tokens: int = 0  # the usage the provider reported (0 when it reported none)
    completion_tokens: int = 0


class Exchange:
    """One routed request while it is admitted, forwarded and answered."""

    __slots__ = ("gw", "meter", "outcome", "permits", "request", "scope", "send", "watch")

    def __init__(
        self,
        gw: Gateway,
        scope: Scope,
        send: Send,
        request: Intake,
        outcome: Outcome,
        permits: Permits,
        watch: DisconnectWatch,
        meter: Meter,
    ) -> None:
        self.gw = gw
        self.scope = scope
        self.send = send
        self.request = request
        self.outcome = outcome
        self.permits = permits
        self.watch = watch
        self.meter = meter
