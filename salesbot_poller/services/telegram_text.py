"""Telegram messages as a terminal shows them: what `demo`, `demo --serve`, `demo --weekly`
and every dry run (`once`, `run`, `report`) print instead of the HTML the bot sends.

Contract:
- `plain_text(message_html)`: the text of a message sent with parse_mode HTML as the chat
  shows it: tags dropped (<b>, <i>, <u>, <s>, <code>, <pre>, <blockquote>, spoilers...),
  entities decoded once (`&amp;lt;` reads `&lt;`), a link shown as `text (url)`, or just
  `url` when its text is the url. Read with the standard library's `html.parser`, so a `>`
  inside an attribute or a tag split across lines is read as Telegram reads it.
- `file_lines(kind, caption_html)`: a photo or document as lines: `[kind: caption's first
  line]`, then the caption's other lines; `[kind]` without a caption.
- `keyboard_line(markup)`: an inline keyboard (`reply_markup`, as a dict or its JSON) as
  one line of `[label]`s; None when there are no buttons.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any


class _TextReader(HTMLParser):
    """Collects the visible text; remembers each open link's target to show after its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._links: list[tuple[str, int]] = []  # (href, where its text starts in chunks)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self.chunks)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._links:
            href, start = self._links.pop()
            text = "".join(self.chunks[start:])
            if href and text.strip() != href:
                self.chunks.append(f" ({href})" if text.strip() else href)

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def plain_text(message_html: str) -> str:
    """See the module contract."""
    reader = _TextReader()
    reader.feed(message_html)
    reader.close()
    return "".join(reader.chunks)


def file_lines(kind: str, caption_html: str) -> list[str]:
    """See the module contract."""
    first, *rest = plain_text(caption_html).splitlines() or [""]
    return [f"[{kind}: {first}]" if first else f"[{kind}]", *rest]


def keyboard_line(markup: Any) -> str | None:
    """See the module contract."""
    if isinstance(markup, str):
        try:
            markup = json.loads(markup)
        except ValueError:
            return None
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    labels = [
        str(button.get("text", ""))
        for row in rows or []
        if isinstance(row, list)
        for button in row
        if isinstance(button, dict)
    ]
    return " ".join(f"[{label}]" for label in labels) or None
