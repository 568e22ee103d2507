"""The results as a PNG: each figure's ratio to its baseline, and the caller's cost by fan-out.

Needs matplotlib (``pip install -r bench/requirements.txt``); without it ``render`` returns
None and the benchmark carries on with its tables.
"""

COLOURS = {True: "#2e7d32", False: "#c62828", None: "#757575"}


def shorten(text, limit=60):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(rows, path, title):
    """Draw ``rows`` (``Row.as_dict()`` dicts) to ``path``; return the path, or None."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    measured = [r for r in rows if r["ratio"] is not None
                and not r["scenario"].startswith("queries")]
    caller = [r for r in rows if r["scenario"].startswith("1 caller:") and "n" in r["data"]]
    figure, (bars, lines) = pyplot.subplots(
        1, 2, figsize=(18, max(6, 0.5 * len(measured) + 1.5)),
        gridspec_kw={"width_ratios": [3, 2]},
    )
    figure.suptitle(title)

    labels = [f"{r['scenario']} [{r['backend']}]\n{shorten(r['size'])}" for r in measured]
    ratios = [r["ratio"] for r in measured]
    positions = range(len(measured))
    bars.barh(positions, ratios, color=[COLOURS[r["met"]] for r in measured])
    bars.set_yticks(list(positions), labels, fontsize=7)
    bars.invert_yaxis()
    bars.set_xscale("log")
    bars.axvline(1.0, color="black", linewidth=0.8)
    bars.set_xlabel("measured ÷ baseline (log); green: target met, red: missed, grey: none")
    for position, ratio in zip(positions, ratios, strict=True):
        bars.annotate(f"{ratio:.2f}×", (ratio, position), xytext=(3, 0),
                      textcoords="offset points", va="center", fontsize=7)

    series = {}
    for r in caller:
        key = f"{r['backend']}: {'in transaction' if r['data']['kind'] == 'in_tx' else '+ commit'}"
        series.setdefault(key, []).append((r["data"]["n"], r["measured"]))
        if r["backend"] == "database":
            base = f"baseline: bulk_create{' + commit' if r['data']['kind'] == 'total' else ''}"
            series.setdefault(base, []).append((r["data"]["n"], r["baseline"]))
    for key, points in series.items():
        points.sort()
        style = "--" if key.startswith("baseline") else "-"
        lines.plot([n for n, _ in points], [v for _, v in points], style, marker="o", label=key)
    if series:
        targets = sorted({n for points in series.values() for n, _ in points})
        lines.plot(targets, [1 + 29 * (n - 1) / 999 for n in targets], ":", color="black",
                   label="target (database, in transaction)")
        lines.set_xscale("log")
        lines.set_yscale("log")
        lines.legend(fontsize=7)
    lines.set_title("1. caller's cost of one call (median)", fontsize=9)
    lines.set_xlabel("targets")
    lines.set_ylabel("ms")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def render_concurrency(rows, path):
    """Draw scenario 9's deliveries per second against concurrency, for each mode and each
    bare client, to ``path``; return the path, or None (no matplotlib, or no such rows)."""
    curves = [r["data"]["curve"] for r in rows if r.get("data", {}).get("curve")]
    if not curves:
        return None
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 5))
    for label, points in curves[-1].items():
        if not points:
            continue
        ordered = sorted((int(n), rate) for n, rate in points.items())
        style = "--" if label.startswith("bare") else "-"
        axes.plot([n for n, _ in ordered], [rate for _, rate in ordered], style, marker="o",
                  label=f"{label} worker" if not label.startswith("bare") else label)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("requests in flight (worker --concurrency)")
    axes.set_ylabel("deliveries (requests) per second")
    axes.set_title("One process to a fast receiver: throughput against concurrency",
                   fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path
