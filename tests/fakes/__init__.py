"""Loopback fakes of amoCRM, a recording host, OpenAI and the Telegram Bot API for tests."""

from .amocrm import FakeAmoCRM, make_jwt
from .audio import make_mp3, make_silence_flac, make_turns_mp3, make_wav, tone_runs
from .base import FakeServer, RecordedRequest, Reply
from .openai_api import FakeOpenAI
from .recordings import FakeRecordings
from .telegram_api import FakeTelegram
from .tg_html import TelegramHTMLError, utf16_len, validate_telegram_html

__all__ = [
    "FakeAmoCRM",
    "FakeOpenAI",
    "FakeRecordings",
    "FakeServer",
    "FakeTelegram",
    "RecordedRequest",
    "Reply",
    "TelegramHTMLError",
    "make_jwt",
    "make_mp3",
    "make_silence_flac",
    "make_turns_mp3",
    "make_wav",
    "tone_runs",
    "utf16_len",
    "validate_telegram_html",
]
