"""The development `SmsSender`: messages kept in memory, and the one-time codes they carry.

A real provider implements `SmsSender` elsewhere. Logs name a masked number, never a message.
Imports only the standard library and core ports.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from nexus.core.auth.model import mask_phone
from nexus.core.ports import Clock
from nexus.core.telemetry import SystemClock

SMS_CODE_DIGITS: Final = 6
DEFAULT_MAX_MESSAGES: Final = 1000

_SYSTEM_CLOCK: Final = SystemClock()
_CODE = re.compile(rf"(?<![0-9])[0-9]{{{SMS_CODE_DIGITS}}}(?![0-9])")
_log = logging.getLogger(__name__)


def new_sms_code() -> str:
    """Six random digits from the system's CSPRNG, leading zeros kept."""
    return f"{secrets.randbelow(10**SMS_CODE_DIGITS):0{SMS_CODE_DIGITS}d}"


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One text message as it would have left for the phone network."""

    phone: str = field(repr=False)
    text: str = field(repr=False)
    sent_at: datetime


class MessageSink:
    """Keeps the newest `max_messages` messages instead of sending them; for development and tests."""

    def __init__(self, *, max_messages: int = DEFAULT_MAX_MESSAGES, clock: Clock = _SYSTEM_CLOCK) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self._messages: deque[SentMessage] = deque(maxlen=max_messages)
        self._clock = clock

    def __repr__(self) -> str:
        return f"MessageSink(messages={len(self._messages)}, max_messages={self._messages.maxlen})"

    async def send(self, phone: str, message: str) -> None:
        """Keep the message (dropping the oldest beyond the bound)."""
        self._messages.append(SentMessage(phone, message, self._clock.now()))
        _log.info("SMS kept by the development message sink for %s", mask_phone(phone))

    @property
    def messages(self) -> tuple[SentMessage, ...]:
        """Every kept message, oldest first."""
        return tuple(self._messages)

    def messages_to(self, phone: str) -> list[str]:
        """The texts sent to `phone`, oldest first."""
        return [sent.text for sent in self._messages if sent.phone == phone]

    def last_code(self, phone: str) -> str | None:
        """The six-digit code in the newest message to `phone`, if there is one."""
        texts = self.messages_to(phone)
        found = _CODE.search(texts[-1]) if texts else None
        return found.group() if found else None
