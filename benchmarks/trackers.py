"""Trackers (`salesbot_poller/trackers`): 50 trackers of 10 phrases over stored 5-minute calls.

Run from the repository root:
    .venv/bin/python benchmarks/trackers.py [--calls 10000] [--seed 1]

Synthetic transcripts in the stored form ("[mm:ss] Менеджер: …" / "Клиент: …" lines, about
150 words a minute: ~750 words for 5 minutes) drawn from every form of ~250 everyday sales
words (the dictionary's own inflections, so the word-form cache sees realistic variety) and
numbers in digits and words; phrases of 1 to 3 words (mostly 2 or 3) of the same vocabulary, so
calls do have hits, and many phrases start with a word the call says (the costly case).
Each call is timed as the pipeline does it: `utterances` then `Matcher.hits` (transcripts
are made outside the timing, one at a time, so memory is the matcher's own).

Table: the dictionary's load and the Matcher's build; calls/s, ms per call (median, p95,
the first call with a cold cache); hits per call; peak RSS; then one 3-hour call against
5-minute calls in ms per minute of speech, to show the cost is linear in the length.
Target: under 20 ms per 5-minute call.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time

from salesbot_poller.config.trackers import TrackerConfig
from salesbot_poller.services.quotes import clock
from salesbot_poller.trackers import Matcher, utterances
from salesbot_poller.trackers.morph import analyzer

WORDS_PER_MINUTE = 150
CALL_MINUTES = 5
LONG_MINUTES = 180
# Word lists as text: a literal list of 170 words would be 170 lines.
LEMMAS = """
скидка цена договор доставка поставка счёт оплата склад заказ партия товар стеллаж панель окно
дверь профиль монтаж замер объект неделя месяц день пятница понедельник среда четверг рубль
процент тысяча метр штука клиент менеджер компания директор бухгалтерия отдел поставщик
конкурент гарантия качество срок условие предложение скидочка вопрос проблема решение запись
разговор звонок письмо почта сайт каталог размер цвет материал металл сталь дерево пластик
упаковка машина водитель адрес город улица дом офис производство завод цех бригада мастер
смета расчёт акт накладная претензия возврат деньги аванс предоплата рассрочка кредит банк
документ подпись печать лицензия сертификат образец фото видео презентация встреча
хотеть мочь сделать дать привезти доставить отправить прислать посчитать узнать уточнить
подумать решить договориться оплатить заказать купить продать выбрать поменять вернуть
расторгнуть отказаться перезвонить написать позвонить согласовать подписать проверить
успеть начать закончить ждать приехать забрать поставить собрать смонтировать показать
большой маленький новый старый хороший плохой дешёвый дорогой быстрый медленный удобный
металлический деревянный белый серый чёрный складской оптовый розничный последний первый
нужный возможный точный честный срочный готовый бесплатный отдельный полный
""".split()  # noqa: SIM905
FILLERS = "ну вот да нет так это как бы и а но в на с по до за от у для что если то уже ещё очень тоже".split()  # noqa: SIM905
NUMBERS = ["10", "25", "сто", "двадцать пять", "десять", "пятнадцать", "тысяча двести", "5%", "3"]


def vocabulary() -> list[str]:
    """Every dictionary form of `LEMMAS` (a few thousand distinct words)."""
    forms: set[str] = set()
    parse = analyzer().parse  # type: ignore[attr-defined]
    for lemma in LEMMAS:
        forms.update(f.word for f in parse(lemma)[0].lexeme)
    return sorted(forms)


def trackers(rng: random.Random, count: int = 50, phrases: int = 10) -> list[TrackerConfig]:
    found = []
    for number in range(count):
        texts = [" ".join(rng.sample(LEMMAS, rng.choice([1, 2, 2, 2, 3, 3, 3, 3, 3, 3]))) for _ in range(phrases - 1)]
        texts.append(f"{rng.choice(['10', 'двадцать пять', '5'])} {rng.choice(['процентов', 'тысяч', 'штук'])}")
        speaker = ["any", "client", "manager"][number % 3]
        found.append(TrackerConfig.model_validate({"name": f"T{number}", "phrases": texts, "speaker": speaker}))
    return found


def transcript(rng: random.Random, forms: list[str], minutes: float) -> str:
    """A stored transcript of `minutes` of speech: turns of 5 to 25 words, alternating roles."""
    lines, said, total = [], 0, int(minutes * WORDS_PER_MINUTE)
    role = 0
    while said < total:
        size = rng.randint(5, 25)
        words = [
            rng.choice(FILLERS) if r < 0.35 else rng.choice(NUMBERS) if r < 0.37 else rng.choice(forms)
            for r in (rng.random() for _ in range(size))
        ]
        at = int(said * 60 / WORDS_PER_MINUTE)
        lines.append(f"[{clock(at)}] {'Менеджер' if role else 'Клиент'}: {' '.join(words).capitalize()}.")
        said, role = said + size, 1 - role
    return "\n".join(lines)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="5-minute calls to match (%(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    before = peak_mb()
    started = time.perf_counter()
    analyzer()
    load_s = time.perf_counter() - started
    dictionary_mb = peak_mb() - before
    forms = vocabulary()
    configured = trackers(rng)
    started = time.perf_counter()
    matcher = Matcher(configured)
    build_ms = (time.perf_counter() - started) * 1000

    times, hits, words = [], 0, 0
    for _ in range(args.calls):
        text = transcript(rng, forms, CALL_MINUTES)
        started = time.perf_counter()
        lines = utterances(text)
        found = matcher.hits(lines)
        times.append(time.perf_counter() - started)
        hits += len(found)
        words += sum(len(line.text.split()) for line in lines)
    total = sum(times)
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]

    long_text = transcript(rng, forms, LONG_MINUTES)
    long_runs = []
    for _ in range(3):
        started = time.perf_counter()
        long_hits = len(matcher.hits(utterances(long_text)))
        long_runs.append(time.perf_counter() - started)
    long_ms = statistics.median(long_runs) * 1000

    print(
        f"trackers: {len(configured)} x {len(configured[0].phrases)} phrases;"
        f" {len(forms):,} word forms in the vocabulary"
    )
    print(f"{'measure':<42} {'value':>12}")
    rows = [
        ("dictionary load (once per process), s", f"{load_s:.2f}"),
        ("dictionary memory, MB", f"{dictionary_mb:.0f}"),
        ("Matcher build, ms", f"{build_ms:.1f}"),
        ("5-minute calls matched", f"{args.calls:,}"),
        ("words per call (mean)", f"{words / args.calls:.0f}"),
        ("throughput, calls/s", f"{args.calls / total:,.0f}"),
        ("ms per call, median", f"{statistics.median(times) * 1000:.2f}"),
        ("ms per call, p95", f"{p95 * 1000:.2f}"),
        ("ms per call, first (cold cache)", f"{times[0] * 1000:.2f}"),
        ("hits per call (mean)", f"{hits / args.calls:.1f}"),
        ("peak RSS, MB", f"{peak_mb():.0f}"),
        ("3-hour call, ms", f"{long_ms:.0f}"),
        ("3-hour call, hits", f"{long_hits:,}"),
        ("ms per minute of speech, 5 min", f"{statistics.median(times) * 1000 / CALL_MINUTES:.2f}"),
        ("ms per minute of speech, 3 h", f"{long_ms / LONG_MINUTES:.2f}"),
    ]
    for name, value in rows:
        print(f"{name:<42} {value:>12}")
    verdict = "met" if statistics.median(times) * 1000 < 20 and p95 * 1000 < 20 else "NOT met"
    print(f"target < 20 ms per 5-minute call (median and p95): {verdict}")


if __name__ == "__main__":
    main()
