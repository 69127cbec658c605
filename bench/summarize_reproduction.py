"""Summarise the CPU reproduction (bench/reproduce_cpu.sh) against the paper's three claims.

    python bench/summarize_reproduction.py runs/repro

Prints a Markdown table per model (MU, FE, FQ, forget/retain ROUGE-L, forget token entropy, share of forget and
retain answers that are refusals) read from each run's results.json. Refusals are recognised as answers that contain
one of the refusal templates (the built-in set the targeted methods were trained with).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from obliviate.data.refusals import load_refusals

MODELS = ["target", "retain", "ga_gd", "npo_gd", "me_gd", "idk_gd", "idk_kl", "idk_ap"]
# The newer methods (bench/reproduce_cpu_recent.sh): every other config in configs/reproduction/, listed when run.
_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "reproduction"
RECENT = sorted(p.stem for p in _CONFIGS.glob("*.yaml") if p.stem not in MODELS and not p.stem.startswith("finetune_"))


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"


def _refused(items: list[dict], refusals: list[str]) -> str:
    """How many answers contain a refusal template, out of how many."""
    return f"{sum(any(t in it['generation'].lower() for t in refusals) for it in items)}/{len(items)}"


def main(root: str) -> None:
    refusals = [r.lower().rstrip(".") for r in load_refusals()]
    rows = []
    for name in MODELS + [n for n in RECENT if (Path(root) / n / "results.json").is_file()]:
        path = Path(root) / name / "results.json"
        if not path.is_file():
            rows.append(f"| {name} | (not run) |")
            continue
        r = json.loads(path.read_text())
        s, a = r["sets"], r["aggregates"]
        cells = [a["model_utility"]["value"], a["forget_efficacy"]["value"], a["forget_quality"]["value"],
                 s["forget"]["metrics"]["rouge_l"]["value"], s["retain"]["metrics"]["rouge_l"]["value"],
                 s["forget"]["metrics"]["token_entropy"]["value"]]
        rows.append(f"| {r['run'].get('method') or name} | " + " | ".join(_fmt(c) for c in cells)
                    + f" | {_refused(s['forget']['items'], refusals)} | {_refused(s['retain']['items'], refusals)} |")
    print("| model | MU* | FE* | FQ | forget ROUGE-L | retain ROUGE-L | forget token entropy | forget refusals "
          "| retain refusals |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/repro")
