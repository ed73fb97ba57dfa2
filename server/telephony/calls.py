"""What every call-center adapter shares: a call id, channel roles, and the mapping of
session messages to subscriber events (`subscribers.Hub`)."""

from __future__ import annotations

import time
from typing import Any, Callable

from ..protocol import Error, Final, Partial, ServerMessage, to_dict
from .subscribers import Hub

__all__ = ["Call", "CallIdInUse", "parse_roles"]


class CallIdInUse(ValueError):
    """A call with this id (or alias) is in progress: a second one would reset or forge
    its event stream."""


def parse_roles(spec: str, keys: tuple[str, ...]) -> dict[str, str]:
    """"inbound=customer,outbound=agent" -> {"inbound": "customer", ...}; keys not named
    keep their own name. Raises ValueError for unknown keys or empty roles."""
    roles = {k: k for k in keys}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, role = part.partition("=")
        key, role = key.strip(), role.strip()
        if not sep or key not in keys or not role:
            raise ValueError(f"bad role mapping {part!r}: use {','.join(k + '=ROLE' for k in keys)}")
        roles[key] = role
    return roles


class Call:
    """One call's results: events to the hub, tagged with the call id and each
    channel's role. `in_band`, when given, also gets every event (FreeSWITCH)."""

    def __init__(self, hub: Hub, call_id: str, protocol: str, metadata: dict[str, Any] | None = None,
                 in_band: Callable[[dict[str, Any]], None] | None = None, aliases: tuple[str, ...] = ()) -> None:
        self.hub = hub
        self.id = call_id
        self.aliases = tuple(a for a in aliases if a and a != call_id)  # e.g. Twilio's streamSid
        keys = {call_id, *self.aliases}
        if keys & hub.live:
            raise CallIdInUse(f"call id {call_id[:80]!r} is already in progress")
        hub.live.update(keys)
        self.protocol = protocol
        self.in_band = in_band
        self.started_wall = time.time()
        self.ended = False
        self._publish({"type": "call_start", "protocol": protocol, "start_time": round(self.started_wall, 3),
                       "metadata": metadata or {}})

    def _publish(self, event: dict[str, Any]) -> None:
        event = {**event, "call_id": self.id}
        for key in (self.id, *self.aliases):
            self.hub.publish(key, event)
        if self.in_band is not None:
            self.in_band(event)

    def handler(self, channel: int, role: str, roles: dict[int, str] | None = None) -> Callable[[ServerMessage], None]:
        """A `SessionRunner.on_message` publishing partials, finals and errors. channel:
        the index reported for a mono session; roles: index -> role for a multi-channel
        one (then the session's own channel index is kept)."""

        def on_message(msg: ServerMessage) -> None:
            if isinstance(msg, (Partial, Final)):
                event = to_dict(msg)
                if roles is not None:
                    event["role"] = roles.get(msg.channel, str(msg.channel))
                else:
                    event["channel"], event["role"] = channel, role
                self._publish(event)
            elif isinstance(msg, Error):
                self._publish({**to_dict(msg), "channel": channel, "role": role})

        return on_message

    def dtmf(self, digit: str, role: str, time_s: float) -> None:
        self._publish({"type": "dtmf", "digit": digit, "role": role, "time": round(time_s, 3)})

    def end(self, reason: str, audio_seconds: float) -> None:
        if not self.ended:
            self.ended = True
            self._publish({"type": "call_end", "reason": reason, "audio_seconds": round(audio_seconds, 3)})
            self.hub.live.difference_update({self.id, *self.aliases})
