"""Reading a speech-to-text answer, whatever shape it came in and whatever format was asked for.

OpenAI answers in the format asked for; compatible servers (LocalAI, speaches / faster-whisper-
server, vLLM, WhisperX wrappers) often answer in another, and the openai SDK hands on what
it got: a model object that also carries fields its type does not declare (as plain dicts),
or the body as text when it is not JSON.

Contract of `read_answer(result, span, speaker)`, `span` the length in seconds of the audio
sent (the upload) and `speaker` the stereo channel it carries ("" for mono):
- `result` may be an SDK object (`Transcription`, `TranscriptionVerbose`, `TranscriptionDiarized`,
  any of them with undeclared fields), a dict, or a str: a text/plain body (the transcript
  itself), or a JSON object served as text.
- The text is the answer's `text`; when it has none (or an empty one) but its segments have
  text, their join.
- Segments (`segments`, objects or dicts: `start`, `end`, `text`, optional `speaker`) give a
  timed answer when at least one has text and all of those have times. Times are seconds, or
  nanoseconds / milliseconds (LocalAI's whisper.cpp backend): a unit is told by the largest
  end against `span`; times that fit no unit make the answer untimed.
- Otherwise (no segments, an empty list, words only, unusable times) the answer is untimed:
  one segment over the whole upload with the text. The text wins over an empty segment list:
  text with `segments: []` is speech, not silence.
- Empty text and no segment text is silence (an empty result, not an error). An answer with
  neither a `text` nor a `segments` list (valid JSON of another shape) is a `TransientError`,
  never silence (silence skips the call).
- `speaker` (a channel) labels every segment; without one a segment keeps its own label.
- Tokens: `usage` of type "tokens" (an object or a dict); (0, 0) otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from salesbot_poller.domain import Segment
from salesbot_poller.errors import TransientError

# Slack past the upload's length before times are taken for another unit: models stamp a
# little past the end of the audio.
_SLACK = 1.5
_SLACK_SECONDS = 5.0
_UNITS = (1.0, 1e-3, 1e-9)  # seconds, milliseconds, nanoseconds (Go's time.Duration)


@dataclass(frozen=True)
class Heard:
    """One upload's answer, read: segment times in seconds from the start of the upload."""

    text: str
    segments: list[Segment]
    timed: bool
    input_tokens: int = 0
    output_tokens: int = 0


def _get(obj: object, name: str) -> Any:
    """A field of an SDK object or a dict (None when absent: SDK objects built without
    validation lack the fields the answer did not have)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _from_text(result: str) -> object:
    """A text body: the JSON object it holds, else the transcript itself."""
    stripped = result.strip()
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except (ValueError, RecursionError):
            return stripped
        if isinstance(parsed, dict):
            return parsed
    return stripped


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _spoken(raw: Sequence[Any]) -> list[tuple[Any, Any, str, str]]:
    """The segments that have text: (start, end, text, label), times as served."""
    found = []
    for segment in raw:
        text = _get(segment, "text")
        if isinstance(text, str) and text.strip():
            label = _get(segment, "speaker")
            found.append((_get(segment, "start"), _get(segment, "end"), text.strip(), str(label or "")))
    return found


def _timed(spoken: list[tuple[Any, Any, str, str]], span: float, speaker: str) -> list[Segment] | None:
    """The segments in seconds; None when a segment's times are missing or fit no unit."""
    times = [(_number(start), _number(end)) for start, end, _, _ in spoken]
    if any(start is None or end is None or end < start for start, end in times):
        return None
    largest = max(end or 0.0 for _, end in times)
    limit = span * _SLACK + _SLACK_SECONDS
    unit = next((u for u in _UNITS if largest * u <= limit), None)
    if unit is None:
        return None
    return [
        Segment((start or 0.0) * unit, (end or 0.0) * unit, text, speaker or label)
        for (start, end), (_, _, text, label) in zip(times, spoken, strict=True)
    ]


def _tokens(usage: object) -> tuple[int, int]:
    if usage is None or _get(usage, "type") != "tokens":
        return 0, 0
    counts = (_number(_get(usage, "input_tokens")), _number(_get(usage, "output_tokens")))
    return int(counts[0] or 0), int(counts[1] or 0)


def read_answer(result: object, span: float, speaker: str = "") -> Heard:
    """See the module contract."""
    if isinstance(result, str):
        result = _from_text(result)
    if isinstance(result, str):  # the transcript itself
        return Heard(result, [Segment(0.0, span, result, speaker)] if result else [], False)
    tokens_in, tokens_out = _tokens(_get(result, "usage"))
    raw_text, raw_segments = _get(result, "text"), _get(result, "segments")
    spoken = _spoken(raw_segments) if isinstance(raw_segments, list | tuple) else []
    if not isinstance(raw_text, str) and not isinstance(raw_segments, list | tuple):
        # Valid JSON of another shape: not "no speech", which would skip the call.
        raise TransientError("OpenAI transcription: malformed answer (no text)")
    text = raw_text.strip() if isinstance(raw_text, str) else ""
    if not text and spoken:  # the text left out, or empty beside segments that have it
        text = " ".join(t for _, _, t, _ in spoken)
    timed = _timed(spoken, span, speaker) if spoken else None
    if timed is not None:
        return Heard(text, timed, True, tokens_in, tokens_out)
    if not text:  # silence; an empty segment list is as timed as the upload's lack of speech
        return Heard("", [], raw_segments is not None, tokens_in, tokens_out)
    return Heard(text, [Segment(0.0, span, text, speaker)], False, tokens_in, tokens_out)
