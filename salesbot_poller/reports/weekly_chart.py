"""The weekly report's chart: each manager's average score per week, as a PNG.

Contract: `render_chart(series, week_labels, title)` returns PNG bytes (1200×675 px, about
a 16:9 Telegram preview): one line with markers per manager (a week without a scored call is
a gap), the y axis 0–100, the weeks as x labels, a legend of names under the plot. Text is set
in DejaVu Sans, which matplotlib ships and which has Cyrillic. At most `MAX_LINES` managers
are drawn (the callers order them busiest first); the rest are named in the legend's title.

matplotlib is imported inside the function (it takes a while, and nothing else needs it), and
only its object API is used with the Agg canvas: no pyplot, so no global figure state is
shared between threads and no display is looked for.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

WIDTH_IN, HEIGHT_IN, DPI = 12.0, 6.75, 100
MAX_LINES = 10
FONT = "DejaVu Sans"


def render_chart(series: Mapping[str, Sequence[int | None]], week_labels: Sequence[str], title: str) -> bytes:
    """See the module contract."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    weeks = list(range(len(week_labels)))
    names = list(series)[:MAX_LINES]
    for name in names:
        values = [float("nan") if value is None else float(value) for value in series[name]]
        axes.plot(weeks, values, marker="o", linewidth=2.2, markersize=6, label=name)
    axes.set_ylim(0, 100)
    axes.set_xlim(-0.3, max(len(weeks) - 1, 1) + 0.3)
    axes.set_xticks(weeks, list(week_labels), fontfamily=FONT, fontsize=11)
    axes.set_yticks(range(0, 101, 20))
    axes.tick_params(axis="y", labelsize=11)
    axes.set_ylabel("Средняя оценка, баллы из 100", fontfamily=FONT, fontsize=12)
    axes.set_xlabel("Неделя (с понедельника)", fontfamily=FONT, fontsize=12)
    axes.set_title(title, fontfamily=FONT, fontsize=15, fontweight="bold", loc="left")
    axes.grid(axis="y", alpha=0.3)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if not names:
        axes.text(0.5, 0.5, "Нет оценённых звонков", transform=axes.transAxes, ha="center", fontfamily=FONT)
    else:
        rest = len(series) - len(names)
        legend = axes.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            ncol=min(len(names), 4),
            frameon=False,
            prop={"family": FONT, "size": 11},
            title=f"и ещё {rest} менеджеров" if rest else None,
        )
        legend.get_title().set_fontfamily(FONT)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
