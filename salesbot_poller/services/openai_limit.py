"""How many OpenAI requests may be in flight at once, process-wide.

Contract of `RequestLimit(size)`:
- `with limit:` holds one of `size` slots for the duration of the block, waiting for a free
  one first. One instance is shared by everything that calls OpenAI (every worker thread,
  both channels of a stereo call, every chunk, every analysis request), so the account's
  rate limits see at most `size` requests at a time however many calls are being worked.
- Hold it around the SDK request only: never around audio preparation or anything else that
  does not talk to OpenAI, or a slot would sit idle while the CPU works.
- Blocks do not nest: a thread holding a slot must not wait for another (with size 1 that
  would wait forever).
"""

from __future__ import annotations

import threading
from types import TracebackType


class RequestLimit:
    """At most `size` OpenAI requests in flight at once (see the module contract)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a request limit needs at least one slot")
        self.size = size
        # Bounded: a release without an acquire is a bug, and it should fail loudly.
        self._slots = threading.BoundedSemaphore(size)

    def __enter__(self) -> None:
        self._slots.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._slots.release()

    def __repr__(self) -> str:
        return f"RequestLimit({self.size})"
