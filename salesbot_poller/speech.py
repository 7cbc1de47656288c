"""Speech-to-text through the OpenAI audio API (any OpenAI-compatible server).

Contract: `OpenAITranscriber.transcribe(path)` uploads the file once and returns its text.
Files over the 25 MB upload limit fail permanently with a clear message (chunking long
calls is separate work). SDK errors are mapped by `map_openai_error`.
"""

from __future__ import annotations

from pathlib import Path

import openai

from salesbot_poller.domain import Transcript
from salesbot_poller.errors import PermanentError
from salesbot_poller.openai_errors import map_openai_error

UPLOAD_LIMIT_BYTES = 25 * 1024 * 1024


class OpenAITranscriber:
    """Implements `domain.Transcriber`."""

    def __init__(self, client: openai.OpenAI, model: str, language: str) -> None:
        self._client = client
        self._model = model
        self._language = language

    def transcribe(self, audio: Path) -> Transcript:
        size = audio.stat().st_size
        if size > UPLOAD_LIMIT_BYTES:
            raise PermanentError(
                f"recording is {size / 2**20:.1f} MB, over the 25 MB upload limit of the speech-to-text API"
            )
        try:
            result = self._client.audio.transcriptions.create(
                file=(audio.name, audio.read_bytes()),
                model=self._model,
                language=self._language or openai.omit,
                response_format="json",
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, "transcription", self._model) from None
        return Transcript(text=result.text.strip())
