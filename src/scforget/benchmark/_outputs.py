"""What a benchmark run writes: tables, config with versions and machine, figures, one HTML report."""

from __future__ import annotations

import base64
import html
import json
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._protocol import BenchmarkResult


def machine() -> dict[str, object]:
    """The machine a run used: platform, processor, cores, torch threads and devices."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_config(result: BenchmarkResult, path: Path) -> Path:
    """``config.json``: the configuration, timings, package versions, machine and command line."""
    from scforget.privacy._html import package_versions

    payload = {
        "config": result.config.to_dict(),
        "timings_s": result.timings,
        "versions": package_versions(),
        "machine": machine(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def _roc_inputs(result: BenchmarkResult, design: str, attack: str) -> tuple[dict, dict]:
    """One model per method (the first baseline and unlearning seed) for the ROC overlay."""
    scores, labels = {}, {}
    for (d, method, _, _), per_cell in sorted(result.scores.items(), key=lambda kv: (kv[0][2], kv[0][3])):
        if d == design and method not in scores and attack in per_cell.columns:
            scores[method] = per_cell[attack].to_numpy()
            labels[method] = per_cell["label"].to_numpy()
    return scores, labels


def write_figures(result: BenchmarkResult, out: Path) -> list[Path]:
    """PNG figures per design: privacy-utility scatter, ROC overlay, attack heatmap, time ratios."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from scforget import pl

    paths: list[Path] = []
    if "advantage" not in result.summary.columns:
        return paths
    out.mkdir(parents=True, exist_ok=True)
    for design in dict.fromkeys(result.summary.index.get_level_values("design")):
        s = result.summary.loc[design]
        safe = "".join(ch if ch.isalnum() else "_" for ch in str(design))
        attack = str(s["primary_attack"].iloc[0])
        draws = {
            "privacy_utility": lambda ax, s=s, d=design: pl.privacy_utility(s, ax=ax, show=False, title=f"{d}"),
            "roc": lambda ax, d=design, a=attack: pl.roc(
                *_roc_inputs(result, d, a), ax=ax, show=False, title=f"{d}: {a} attack"
            ),
            "attack_heatmap": lambda ax, s=s, d=design: pl.attack_heatmap(s, ax=ax, show=False, title=f"{d}: mean AUC"),
            "time_ratios": lambda ax, s=s, d=design: pl.time_ratios(s, ax=ax, show=False, title=f"{d}"),
        }
        sizes = {
            "privacy_utility": (6, 4.5),
            "roc": (4.5, 4.5),
            "attack_heatmap": (7, 1 + 0.35 * len(s)),
            "time_ratios": (6, 1 + 0.3 * len(s)),
        }
        for name, draw in draws.items():
            fig, ax = plt.subplots(figsize=sizes[name])
            draw(ax)
            if name == "roc":  # one curve per method: the legend goes beside the axes
                ax.legend(frameon=False, fontsize="x-small", loc="center left", bbox_to_anchor=(1.02, 0.5))
            path = out / f"{safe}_{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            paths.append(path)
    return paths


def write_report(result: BenchmarkResult, figures: list[Path], path: Path) -> Path:
    """``report.html``: the configuration, the summary and every figure, in one self-contained file."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>scforget benchmark</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:.8em}td,th{border:1px solid #ddd;padding:2px 6px}"
        "img{max-width:100%}</style></head><body><h1>scforget benchmark</h1>",
        f"<pre>{esc(result.describe())}</pre>",
        "<h2>Summary</h2>",
        result.summary.to_html(float_format=lambda x: f"{x:.4g}", na_rep="", border=0),
    ]
    for fig in figures:
        data = base64.b64encode(fig.read_bytes()).decode("ascii")
        parts += [f"<h3>{esc(fig.stem)}</h3>", f"<img alt='{esc(fig.stem)}' src='data:image/png;base64,{data}'>"]
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_tables(result: BenchmarkResult, out: Path) -> list[Path]:
    """``runs.csv``, ``summary.csv``, ``summary.md`` and, with a pre-flight check, ``preflight.csv``."""
    paths = [out / "runs.csv", out / "summary.csv", out / "summary.md"]
    result.runs.to_csv(paths[0], index=False)
    result.summary.to_csv(paths[1])
    paths[2].write_text(result.to_markdown())
    if not result.preflight.empty:
        paths.append(out / "preflight.csv")
        result.preflight.to_csv(paths[-1])
    return paths
