"""The charts of the benchmark report (docs/img/*.png), drawn from a run's figures with matplotlib (the bench extra)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.figures import Figures
from benchmarks.report import median, percentile

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def draw(fig_data: Figures) -> None:
    """dispatch.png, latency.png, queues.png and payload.png in docs/img/, for the sections that were run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    contenders = fig_data.dispatch
    if contenders:
        labels = [c.key for c in contenders]
        x = range(len(contenders))
        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.bar([i - 0.2 for i in x], [median(c.fg) for c in contenders], 0.4, label="foreground")
        ax.bar([i + 0.2 for i in x], [median(c.bg) for c in contenders], 0.4, label="background")
        ax.set_xticks(list(x), labels)
        ax.set_ylabel("jobs/s (median)")
        ax.set_title("Dispatch throughput, no-op jobs, gearmand 1.1.20 on loopback")
        ax.legend()
        ax.text(
            0.99,
            0.97,
            "raw1/2: raw socket; rawi: raw, one buffer; ij1/ijN/ij1w: islandora-job; pyg: pygearman; cli: gearman -w",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
        )
        fig.tight_layout()
        fig.savefig(IMG / "dispatch.png", dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for offset, (q, name) in zip((-0.25, 0, 0.25), ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")), strict=True):
            ax.bar([i + offset for i in x], [percentile(c.latency, q) * 1e3 for c in contenders], 0.25, label=name)
        ax.set_xticks(list(x), labels)
        ax.set_yscale("log")
        ax.set_ylabel("round trip, ms (log)")
        ax.set_title("Foreground round trip, one job at a time")
        ax.legend()
        fig.tight_layout()
        fig.savefig(IMG / "latency.png", dpi=100)
        plt.close(fig)
    queues = [q for q in fig_data.queues if q.error is None]
    if queues:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        x = range(len(queues))
        ax.bar([i - 0.2 for i in x], [q.submit for q in queues], 0.4, label="submitted/s")
        ax.bar([i + 0.2 for i in x], [q.complete for q in queues], 0.4, label="submitted+completed/s")
        ax.set_xticks(list(x), [q.queue for q in queues])
        ax.set_yscale("log")
        ax.set_ylabel("jobs/s (log)")
        ax.set_title("Background jobs per gearmand queue type")
        ax.legend()
        fig.tight_layout()
        fig.savefig(IMG / "queues.png", dpi=100)
        plt.close(fig)
    payload = fig_data.payload
    if payload:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        sizes = [r.size for r in payload]
        for key, name in (
            ("raw", "raw worker"),
            ("ij_raw", 'islandora-job payload="raw"'),
            ("ij_json", "islandora-job JSON payload"),
        ):
            ax1.plot(sizes, [getattr(r, key) for r in payload], marker="o", label=name)
            ax2.plot(sizes, [getattr(r, key + "_rss_mb") for r in payload], marker="o", label=name)
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            ax.set_xlabel("payload bytes")
            ax.legend(fontsize=8)
        ax1.set_yscale("log")
        ax1.set_ylabel("jobs/s")
        ax1.set_title("Throughput by payload size")
        ax2.set_ylabel("peak RSS of the worker process, MiB")
        ax2.set_title("Memory by payload size")
        fig.tight_layout()
        fig.savefig(IMG / "payload.png", dpi=100)
        plt.close(fig)
