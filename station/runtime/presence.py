"""Whether the CSMS is reachable right now, and who wants to hear that the outbox has something new. The connection
sets `online`; the runtime's writers read it (a message queued while offline is marked so) and call `outbox_changed`."""

from __future__ import annotations

from collections.abc import Callable


class CsmsPresence:
    def __init__(self) -> None:
        self.online = False
        self.outbox_listeners: list[Callable[[], None]] = []

    def outbox_changed(self) -> None:
        for listener in self.outbox_listeners:
            listener()
