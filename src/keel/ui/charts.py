"""Line charts as inline SVG, drawn on the server: no script, readable by screen readers
(a <title> and <desc> each) and shown with a data table beside them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 10, 12, 28
MAX_MARKERS = 400  # point markers (with hover values) only while the chart stays light
PALETTE_SIZE = 8


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float | None]


@dataclass(frozen=True)
class Chart:
    key: str  # html id
    title: str
    buckets: list[int]  # bucket starts, µs since the epoch
    series: list[Series]
    show: Callable[[float | None], str]  # how a value is written

    @property
    def has_data(self) -> bool:
        return any(v is not None for s in self.series for v in s.values)

    @property
    def total(self) -> float:
        return sum(v for s in self.series for v in s.values if v is not None)

    def label(self, us: int) -> str:
        span = (self.buckets[-1] - self.buckets[0]) if len(self.buckets) > 1 else 0
        pattern = "%m-%d %H:%M" if span >= 86_400_000_000 else "%H:%M"
        return time.strftime(pattern, time.gmtime(us / 1_000_000))

    def rows(self) -> list[tuple[str, list[str]]]:
        """The data table: one row per bucket, one column per series."""
        return [
            (self.label(start), [self.show(s.values[i]) for s in self.series])
            for i, start in enumerate(self.buckets)
        ]

    def svg(self) -> Markup:
        values = [v for s in self.series for v in s.values if v is not None]
        top = max(values, default=0.0) or 1.0
        width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
        steps = max(1, len(self.buckets) - 1)

        def x(i: int) -> float:
            return LEFT + width * (i / steps if len(self.buckets) > 1 else 0.5)

        def y(v: float) -> float:
            return TOP + height * (1 - v / top)

        title_id, desc_id = f"{self.key}-title", f"{self.key}-desc"
        summary = ", ".join(
            f"{s.name}: peak {self.show(max((v for v in s.values if v is not None), default=None))}"
            for s in self.series
        )
        parts = [
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-labelledby="{title_id} {desc_id}" preserveAspectRatio="none">',
            f'<title id="{title_id}">{escape(self.title)}</title>',
            f'<desc id="{desc_id}">{escape(self.title)} per time bucket, '
            f"{escape(self.label(self.buckets[0]))} to {escape(self.label(self.buckets[-1]))}"
            f" (UTC). {escape(summary or 'No data.')} The table below lists every value.</desc>",
        ]
        for fraction in (0.0, 0.5, 1.0):
            level = TOP + height * (1 - fraction)
            parts.append(
                f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{level:.1f}" '
                f'y2="{level:.1f}"/><text class="axis" x="{LEFT - 6}" y="{level + 4:.1f}" '
                f'text-anchor="end">{escape(self.show(top * fraction))}</text>'
            )
        for index, anchor in ((0, "start"), (len(self.buckets) - 1, "end")):
            parts.append(
                f'<text class="axis" x="{x(index):.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="{anchor}">{escape(self.label(self.buckets[index]))}</text>'
            )
        markers = len(self.buckets) * len(self.series) <= MAX_MARKERS
        for number, series in enumerate(self.series):
            color = f"s{number % PALETTE_SIZE}"
            for segment in _segments(series.values):
                points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in segment)
                parts.append(f'<polyline class="line {color}" points="{points}"/>')
            if markers:
                for i, v in enumerate(series.values):
                    if v is None:
                        continue
                    tip = f"{series.name} {self.label(self.buckets[i])}: {self.show(v)}"
                    parts.append(
                        f'<circle class="dot {color}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5">'
                        f"<title>{escape(tip)}</title></circle>"
                    )
        parts.append("</svg>")
        return Markup("".join(parts))  # every value above is escaped


def _segments(values: list[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive known values; a missing value breaks the line."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((i, v))
    return [run for run in runs if run]
