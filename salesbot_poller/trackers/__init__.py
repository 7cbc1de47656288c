"""Trackers: configured phrases found in a stored transcript, exactly, with no model request.

Contract:
- `utterances(transcript)` reads the stored transcript (`services.dialogue.render_dialogue`:
  one line per turn, `[mm:ss] Менеджер: …` / `Клиент: …`, the time only when the transcript
  had timestamps; a transcript without roles is plain text) as `Utterance`s: role
  "manager" / "client" / "" (unknown), the line's time in seconds (None without one), text.
- `Matcher(trackers)` compiles the trackers once (reuse it: compiling lemmatises every
  phrase); `matcher.hits(utterances, names=None)` returns every `Hit` of the trackers named
  (None: all) in transcript order; linear in the transcript's length. A phrase matches its
  words in order with at most one other word between them, on lemmas (any case, ё = е,
  numbers as digits or words alike); a tracker's `speaker` limits the utterances searched,
  an utterance of unknown role is searched by every tracker.
- `Hit`: the tracker's name, the speaker ("manager" / "client" / ""), the words as spoken
  (from the first matched word to the last) and the time of its utterance (seconds or None).
- `matcher.missing(hits, names=None)`: the names of the expected trackers (`expect = true`)
  among `names` that have no hit.
"""

from salesbot_poller.trackers.lines import Utterance, utterances
from salesbot_poller.trackers.match import Hit, Matcher

__all__ = ["Hit", "Matcher", "Utterance", "utterances"]
