"""A strict checker for Telegram's HTML parse mode.

Rejects what Telegram rejects (unknown tags, unclosed or crossing tags, a `<` that starts no
tag) and, stricter than Telegram, any `&` that is not a known entity and any bare `>`:
our renderer must escape all three. Error reasons follow Telegram's wording where one exists.
"""

from __future__ import annotations

import re

ALLOWED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,6}));")
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_ATTR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_SPACE = " \t\r\n"


class TelegramHTMLError(ValueError):
    """The text would be refused with "Bad Request: can't parse entities: <reason>"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's limits and entity offsets."""
    return len(text.encode("utf-16-le")) // 2


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.out: list[str] = []
        self.stack: list[tuple[str, int]] = []

    def offset(self, pos: int | None = None) -> int:
        """UTF-8 byte offset, as Telegram reports it."""
        return len(self.text[: self.pos if pos is None else pos].encode())

    def fail(self, reason: str) -> TelegramHTMLError:
        return TelegramHTMLError(reason)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
            self.pos += 1

    def entity(self, end: int | None = None) -> str:
        """Decode the entity at pos (pos is on '&') and move past it."""
        m = _ENTITY.match(self.text, self.pos, len(self.text) if end is None else end)
        if m is None:
            raise self.fail(f"bare & at byte offset {self.offset()}: escape it as &amp;")
        if m[1]:
            char = _NAMED[m[1]]
        else:
            code = int(m[2]) if m[2] else int(m[3], 16)
            if not 0 < code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise self.fail(f"invalid character reference at byte offset {self.offset()}")
            char = chr(code)
        self.pos = m.end()
        return char

    def run(self) -> str:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "<":
                self.tag()
            elif ch == "&":
                self.out.append(self.entity())
            elif ch == ">":
                raise self.fail(f'Unescaped ">" at byte offset {self.offset()}')
            else:
                nxt = min((i for i in (text.find(c, self.pos) for c in "<&>") if i >= 0), default=len(text))
                self.out.append(text[self.pos : nxt])
                self.pos = nxt
        if self.stack:
            raise self.fail(f'Can\'t find end tag corresponding to start tag "{self.stack[-1][0]}"')
        return "".join(self.out)

    def tag(self) -> None:
        start = self.pos
        self.pos += 1
        if self.text.startswith("/", self.pos):
            self.pos += 1
            m = _TAG_NAME.match(self.text, self.pos)
            name = m[0].lower() if m else ""
            self.pos = m.end() if m else self.pos
            self.skip_space()
            if not self.text.startswith(">", self.pos):
                raise self.fail(f"Unclosed end tag at byte offset {self.offset(start)}")
            self.pos += 1
            if not self.stack:
                raise self.fail(f"Unexpected end tag at byte offset {self.offset(start)}")
            open_name = self.stack.pop()[0]
            if name != open_name:
                raise self.fail(
                    f"Unmatched end tag at byte offset {self.offset(start)}, "
                    f'expected "</{open_name}>", found "</{name}>"'
                )
            return
        m = _TAG_NAME.match(self.text, self.pos)
        name = m[0].lower() if m else ""
        if name not in ALLOWED_TAGS:
            raise self.fail(f'Unsupported start tag "{name}" at byte offset {self.offset(start)}')
        assert m is not None
        self.pos = m.end()
        attrs = self.attributes(name, start)
        self.check(name, attrs, start)
        self.stack.append((name, start))

    def attributes(self, tag: str, start: int) -> dict[str, str]:
        attrs: dict[str, str] = {}
        text = self.text
        while True:
            before = self.pos
            self.skip_space()
            if self.pos >= len(text):
                raise self.fail(f"Unclosed start tag at byte offset {self.offset(start)}")
            if text[self.pos] == ">":
                self.pos += 1
                return attrs
            if self.pos == before:
                raise self.fail(
                    f'Expected whitespace before an attribute of the tag "{tag}" at byte offset {self.offset()}'
                )
            m = _ATTR_NAME.match(text, self.pos)
            if m is None:
                raise self.fail(f'Empty attribute name in the tag "{tag}" at byte offset {self.offset(start)}')
            attr = m[0].lower()
            self.pos = m.end()
            self.skip_space()
            if not text.startswith("=", self.pos):
                attrs[attr] = ""
                continue
            self.pos += 1
            self.skip_space()
            quote = text[self.pos] if self.pos < len(text) else ""
            if quote not in ('"', "'"):
                raise self.fail(
                    f'Expected quoted value of the attribute "{attr}" of the tag "{tag}" at byte offset {self.offset()}'
                )
            end = text.find(quote, self.pos + 1)
            if end < 0:
                raise self.fail(f"Unclosed start tag at byte offset {self.offset(start)}")
            self.pos += 1
            value: list[str] = []
            while self.pos < end:
                if text[self.pos] == "&":
                    value.append(self.entity(end))
                else:
                    nxt = text.find("&", self.pos, end)
                    nxt = end if nxt < 0 else nxt
                    value.append(text[self.pos : nxt])
                    self.pos = nxt
            self.pos = end + 1
            attrs[attr] = "".join(value)

    def check(self, tag: str, attrs: dict[str, str], start: int) -> None:
        at = self.offset(start)
        if tag == "a" and not attrs.get("href", "").strip():
            raise self.fail(f'Tag "a" must have a non-empty attribute "href" at byte offset {at}')
        if tag == "span" and attrs.get("class") != "tg-spoiler":
            raise self.fail(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
        if tag == "tg-emoji" and not attrs.get("emoji-id", "").strip():
            raise self.fail(f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {at}')


def validate_telegram_html(text: str) -> str:
    """Return the visible text of `text` in HTML parse mode, or raise TelegramHTMLError."""
    return _Scanner(text).run()
