"""Speech-to-text answers in every documented and observed shape (tests/data/
transcription_answers.json), served by the fake OpenAI server to the real openai client,
whatever format the transcriber asked for: the text is read, timed segments when there are
usable ones, speakers when the answer names them; text beside an empty segment list is
speech, not silence."""

from __future__ import annotations

import json
import tomllib

import pytest

from salesbot_poller.app import build_openai
from salesbot_poller.config import parse_config
from salesbot_poller.domain import Segment, Transcript
from salesbot_poller.errors import TransientError
from salesbot_poller.services.dialogue import build_dialogue
from salesbot_poller.services.speech import OpenAITranscriber, model_spec
from salesbot_poller.services.transcription_answer import read_answer
from tests.conftest import Servers
from tests.fakes import make_mp3
from tests.samples import names, sample

ANSWERS = "transcription_answers.json"
# What each asks for: json (gpt-4o), verbose_json (whisper-1), diarized_json (*-diarize).
MODELS = ("gpt-4o-transcribe", "whisper-1", "gpt-4o-transcribe-diarize")


def transcribe(servers: Servers, name: str, model: str) -> Transcript:
    """A 4-second mono call transcribed by `model`, the server answering with sample `name`."""
    answer = sample(ANSWERS, name)
    body = answer["body"]
    raw = body.encode() if isinstance(body, str) else json.dumps(body, ensure_ascii=False).encode()
    servers.openai.fail_next("/v1/audio/transcriptions", 200, raw, {"Content-Type": answer["content_type"]})
    audio = servers.tmp / "call.mp3"
    audio.write_bytes(make_mp3(4.0))
    client = build_openai(parse_config(tomllib.loads(servers.config_text()), {}))
    return OpenAITranscriber(client, model, "ru").transcribe(audio)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", names(ANSWERS))
def test_every_answer_shape_is_read_whatever_was_asked_for(servers: Servers, name: str, model: str) -> None:
    expect = sample(ANSWERS, name)["expect"]
    transcript = transcribe(servers, name, model)
    asked = servers.openai.requests_to("/v1/audio/transcriptions")[0]
    assert model_spec(model).response_format.encode() in asked.body
    if expect["timed"]:
        assert transcript.text == " ".join(s.text for s in transcript.segments)
        assert [s.text for s in transcript.segments] and transcript.timed
        assert all(0 <= s.start <= s.end <= 4.1 for s in transcript.segments), transcript.segments
    else:
        assert transcript.text == expect["text"]
    assert " ".join(transcript.text.split()) == " ".join(expect["text"].split())
    assert sorted({s.speaker for s in transcript.segments}) == expect["speakers"]
    assert (transcript.input_tokens, transcript.output_tokens) == tuple(expect["tokens"])


def test_text_beside_an_empty_segment_list_reaches_the_analysis(servers: Servers) -> None:
    transcript = transcribe(servers, "verbose_json_empty_segments", "whisper-1")
    text, _ = build_dialogue(transcript, "left", "in")
    assert text == "Алло, добрый день.", "not silence: the call is analysed, not skipped"


def test_diarized_speakers_become_roles(servers: Servers) -> None:
    transcript = transcribe(servers, "diarized_json", "gpt-4o-transcribe")  # asked json, got diarized
    text, metrics = build_dialogue(transcript, "left", "in")
    assert text.splitlines() == ["[00:00] Менеджер: Алло, добрый день.", "[00:02] Клиент: Сколько стоит доставка?"]
    assert metrics is not None and metrics.manager_questions == 0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"segments": [{"start": 0, "end": 1.5, "text": " Да."}]}, ("Да.", True)),  # no text: the segments'
        ({"text": "", "segments": [{"start": "0", "end": "1.5", "text": "Да."}]}, ("Да.", True)),
        ({"text": "Да.", "segments": [{"start": None, "end": 1.5, "text": "Да."}]}, ("Да.", False)),
        ({"text": "Да.", "segments": [{"start": 0, "end": 9e15, "text": "Да."}]}, ("Да.", False)),  # no unit fits
        ({"text": "Да.", "segments": [{"start": 0, "end": 1500, "text": "Да."}]}, ("Да.", True)),  # milliseconds
        ({"text": "", "segments": []}, ("", True)),  # silence
        ({"segments": []}, ("", True)),
    ],
)
def test_odd_answers_are_read_without_losing_the_text(answer: dict[str, object], expected: tuple[str, bool]) -> None:
    heard = read_answer(answer, 4.0)
    assert (heard.text, heard.timed) == expected
    if heard.timed and heard.text:
        assert heard.segments == [Segment(0.0, 1.5, "Да.", "")]


@pytest.mark.parametrize("answer", [{"result": "Да."}, {"text": None}, {"text": 5}])
def test_an_answer_of_another_shape_is_an_error_not_silence(answer: dict[str, object]) -> None:
    with pytest.raises(TransientError, match="no text"):
        read_answer(answer, 4.0)


def test_a_channel_labels_every_segment() -> None:
    heard = read_answer(sample(ANSWERS, "diarized_json")["body"], 4.0, "right")
    assert {s.speaker for s in heard.segments} == {"right"}
