"""A target's deliveries per hour as a server-rendered SVG bar chart: no script, no
external resources, every text escaped."""

from django.utils import dateformat, timezone
from django.utils.html import escape

from djwebhooks.portal.stats import OUTCOMES

#: The colour of each outcome's part of a bar; each has a contrast of at least 4.5:1
#: against the white background (WCAG AA), and the legend names them.
COLOURS = {"succeeded": "#1a7f37", "failed": "#c6262e", "pending": "#8a5a00",
           "cancelled": "#59636e"}
TEXT = "#1f2328"

WIDTH, HEIGHT = 760, 270
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 36, 52  # margins around the plot


def hourly_svg(buckets, title, description=""):
    """Return SVG text for ``buckets`` (``stats.hourly()``'s list of ``(hour start,
    {status: count})``): one stacked bar per hour, succeeded at the bottom, then failed,
    pending and cancelled; hours labelled every 6 bars (24 hours or fewer) or at each
    midnight (more); the count axis labelled at 0, half and the highest total."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    totals = [sum(counts.values()) for _, counts in buckets]
    top = max([*totals, 1])
    step = plot_width / max(len(buckets), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="chart-title '
        f'chart-desc" font-family="system-ui, sans-serif" font-size="12" fill="{TEXT}">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(description or summary(buckets))}</desc>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        *_legend(),
        *_count_axis(top, plot_height),
    ]
    daily = len(buckets) > 24
    for index, (hour, counts) in enumerate(buckets):
        parts.append(_bar(index, hour, counts, step, top, plot_height, daily))
    parts.append(f'<line x1="{LEFT}" y1="{TOP + plot_height}" x2="{WIDTH - RIGHT}" '
                 f'y2="{TOP + plot_height}" stroke="{TEXT}"/>')
    parts.extend(_axis_titles(buckets, daily))
    parts.append("</svg>")
    return "\n".join(parts)


def summary(buckets):
    """A sentence giving the chart's period and its totals by outcome, for its <desc>."""
    if not buckets:
        return "No hours to show."
    totals = {status: sum(counts.get(status, 0) for _, counts in buckets)
              for status in OUTCOMES}
    counted = ", ".join(f"{count} {status}" for status, count in totals.items())
    return (f"Deliveries per hour for {len(buckets)} hours from "
            f"{_when(buckets[0][0], 'Y-m-d H:i T')}: {counted}.")


def _when(moment, format_string):
    """``moment`` in the current time zone, formatted."""
    return dateformat.format(timezone.localtime(moment), format_string)


def _legend():
    """The coloured squares naming each outcome, above the plot."""
    x = LEFT
    for status in OUTCOMES:
        yield (f'<rect x="{x}" y="10" width="12" height="12" fill="{COLOURS[status]}"/>'
               f'<text x="{x + 16}" y="20">{escape(status.label)}</text>')
        x += 110


def _count_axis(top, plot_height):
    """The count axis: labels and faint grid lines at 0, half the highest total, and it."""
    for value in sorted({0, top // 2, top}):
        y = TOP + plot_height - plot_height * value / top
        yield (f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
               f'stroke="#d0d7de"/>'
               f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')


def _axis_titles(buckets, daily):
    """What each axis counts: deliveries up the side, the hours (and their zone) along."""
    zone = _when(buckets[0][0], "T") if buckets else ""
    along = f"Day ({zone}), one bar per hour" if daily else f"Hour starting ({zone})"
    middle = TOP + (HEIGHT - TOP - BOTTOM) / 2
    yield (f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.1f}" y="{HEIGHT - 8}" '
           f'text-anchor="middle">{escape(along)}</text>')
    yield (f'<text x="12" y="{middle:.1f}" text-anchor="middle" '
           f'transform="rotate(-90 12 {middle:.1f})">Deliveries</text>')


def _bar(index, hour, counts, step, top, plot_height, daily):
    """One hour's group: its stacked parts, a <title> with its counts, and maybe a label."""
    x = LEFT + index * step
    width = max(step - 1, 1) if step > 3 else step
    named = ", ".join(f"{counts.get(status, 0)} {status}" for status in OUTCOMES)
    group = [f'<g class="bar" data-hour="{escape(hour.isoformat())}">',
             f"<title>{escape(_when(hour, 'Y-m-d H:i T'))}: {escape(named)}</title>"]
    y = TOP + plot_height
    for status in OUTCOMES:
        count = counts.get(status, 0)
        if count:
            height = plot_height * count / top
            y -= height
            group.append(f'<rect class="{escape(status)}" x="{x:.2f}" y="{y:.2f}" '
                         f'width="{width:.2f}" height="{height:.2f}" '
                         f'fill="{COLOURS[status]}"/>')
    local = timezone.localtime(hour)
    if (daily and local.hour == 0) or (not daily and index % 6 == 0):
        label = _when(hour, "m-d" if daily else "H:i")
        group.append(f'<text x="{x:.2f}" y="{TOP + plot_height + 16}">{escape(label)}</text>')
    group.append("</g>")
    return "".join(group)
