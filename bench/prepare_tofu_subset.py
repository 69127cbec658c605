"""Write a small TOFU subset for CPU-scale experiments (read from a local TOFU folder; nothing is shipped).

    python bench/prepare_tofu_subset.py --tofu ../shared/data/tofu --retain-authors 8 --out runs/repro/data

Forget set: the standard forget01 split (task 1 of forget01.json: 2 authors, 40 questions). Retain set: the first
``--retain-authors`` authors of the retain file (20 questions each), which are also the first rows of
retain_perturbed.json. The folder uses the TOFU file layout that `obliviate unlearn` evaluates on its own:
forget.json, retain.json, forget_perturbed.json, retain_perturbed.json, real_authors_perturbed.json,
world_facts_perturbed.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

QUESTIONS_PER_AUTHOR = 20


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tofu", required=True, help="TOFU folder in the continual layout")
    ap.add_argument("--retain-authors", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    src, out = Path(args.tofu), Path(args.out)
    n_retain = args.retain_authors * QUESTIONS_PER_AUTHOR

    forget = [r for r in _rows(src / "forget01.json") if str(r.get("task_id")) == "1"]
    forget_q = {r["question"] for r in forget}
    forget_eval = [r for r in _rows(src / "forget01_perturbed.json") if r["question"] in forget_q]
    retain = _rows(src / "retain90.json")[:n_retain]
    retain_eval = _rows(src / "retain_perturbed.json")[:n_retain]
    if [r["question"] for r in retain] != [r["question"] for r in retain_eval]:
        raise SystemExit("retain90.json and retain_perturbed.json do not start with the same questions")
    if len(forget_eval) != len(forget):
        raise SystemExit(f"forget01_perturbed.json has {len(forget_eval)} of the {len(forget)} forget questions")

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write(tmp / "forget.json", forget)
    _write(tmp / "retain.json", retain)
    _write(tmp / "forget_perturbed.json", forget_eval)
    _write(tmp / "retain_perturbed.json", retain_eval)
    for name in ("real_authors_perturbed.json", "world_facts_perturbed.json"):
        shutil.copy(src / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"wrote {out}: forget {len(forget)}, retain {len(retain)}")


if __name__ == "__main__":
    main()
