#!/usr/bin/env bash
# CPU-scale reproduction of the paper's comparisons (docs/reproduction.md). About an hour on 2 CPU cores.
#   bash bench/reproduce_cpu.sh [TOFU_FOLDER]      (default ../shared/data/tofu)
set -euo pipefail
cd "$(dirname "$0")/.."
TOFU=${1:-../shared/data/tofu}
OBL=${OBL:-.venv/bin/obliviate}
PY=${PY:-.venv/bin/python}
EVAL="--benchmark files --set-size 30 --max-new-tokens 48 --batch-size 16"
FILES="--file forget=runs/repro/data/forget_perturbed.json --file retain=runs/repro/data/retain_perturbed.json
       --file real_authors=runs/repro/data/real_authors_perturbed.json
       --file world_facts=runs/repro/data/world_facts_perturbed.json"

[ -f runs/repro/data/forget.json ] || $PY bench/prepare_tofu_subset.py --tofu "$TOFU" --retain-authors 6 --out runs/repro/data
for model in retain target; do
  [ -f runs/repro/$model/run.json ] || $OBL finetune -c configs/reproduction/finetune_$model.yaml
done
[ -f runs/repro/retain/results.json ] || $OBL eval --model runs/repro/retain $EVAL $FILES
[ -f runs/repro/target/results.json ] || \
  $OBL eval --model runs/repro/target $EVAL $FILES --retain-results runs/repro/retain/results.json
$OBL sweep configs/reproduction/{ga_gd,npo_gd,me_gd,idk_gd,idk_kl,idk_ap}.yaml --report runs/repro/methods.html \
  --title "CPU reproduction: SmolLM2-135M, TOFU forget01 subset"
$OBL report runs/repro/{target,retain,ga_gd,npo_gd,me_gd,idk_gd,idk_kl,idk_ap} --out runs/repro/report.html \
  --title "CPU reproduction: SmolLM2-135M, TOFU forget01 subset"
