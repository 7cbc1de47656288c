"""Built-in sandbox servers for `salesbot-poller demo`: small loopback stand-ins for amoCRM
(with a recording host), an OpenAI-compatible API and the Telegram Bot API.

They speak just enough of each API for one poll cycle of the real pipeline, on 127.0.0.1
with ports chosen by the OS. They are part of the program, not of the tests (the tests have
their own, stricter fakes in tests/fakes/).
"""

from salesbot_poller.sandbox.amocrm import SandboxAmoCRM
from salesbot_poller.sandbox.openai_api import SandboxOpenAI
from salesbot_poller.sandbox.telegram import SandboxTelegram

__all__ = ["SandboxAmoCRM", "SandboxOpenAI", "SandboxTelegram"]
