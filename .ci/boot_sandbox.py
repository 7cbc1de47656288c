"""The package's sandbox amoCRM, OpenAI and Telegram servers for `.ci/systemd-boot.sh`, run
inside the booted container (its loopback) with the installed venv's Python.

    python boot_sandbox.py DIR

DIR/tokens.json (written by the boot script) holds the secrets the servers accept. Writes
DIR/urls.json (each server's base URL) once they listen, then, until killed, DIR/sent.json
(every message the bot sent: method, chat_id, text or caption) whenever one comes. While the
file DIR/amo-down exists, amoCRM answers 503 to everything: an outage, as the service sees it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from salesbot_poller.sandbox import SandboxAmoCRM, SandboxOpenAI, SandboxTelegram
from salesbot_poller.sandbox.http import Request, Response, json_response


class OutageAmoCRM(SandboxAmoCRM):
    """amoCRM that answers 503 while `down` (the boot script's outage check)."""

    down = False

    def route(self, request: Request) -> Response:
        if self.down:
            return json_response({"title": "Service Unavailable", "status": 503}, 503)
        return super().route(request)


def write(path: Path, obj: object) -> None:
    """Atomically: the boot script never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False))
    tmp.replace(path)


def main(directory: Path) -> None:
    tokens = json.loads((directory / "tokens.json").read_text())
    amo = OutageAmoCRM(tokens["amo"], int(time.time())).start()
    ai = SandboxOpenAI(tokens["openai"]).start()
    tg = SandboxTelegram(tokens["bot"], tokens["chat"]).start()
    write(directory / "urls.json", {"amo": amo.base_url, "openai": ai.base_url, "telegram": tg.base_url})
    seen = -1
    while True:
        amo.down = (directory / "amo-down").exists()
        sent = [{k: e.get(k) for k in ("method", "chat_id", "text", "caption")} for e in tg.wait_sent(0, 0)]
        if len(sent) != seen:
            write(directory / "sent.json", sent)
            seen = len(sent)
        time.sleep(0.2)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
