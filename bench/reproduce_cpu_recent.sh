#!/usr/bin/env bash
# The newer methods (docs/methods.md, "Newer methods") through the CPU reproduction protocol (docs/reproduction.md):
# the same data subset, target and retain models, seed, training settings and evaluation as bench/reproduce_cpu.sh,
# which must have run first (it writes runs/repro/{data,target,retain}). About 5 minutes per method on 2 idle cores.
#   bash bench/reproduce_cpu_recent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OBL=${OBL:-.venv/bin/obliviate}
for need in runs/repro/data/forget.json runs/repro/target/run.json runs/repro/retain/results.json; do
  [ -f "$need" ] || { echo "missing $need: run bench/reproduce_cpu.sh first" >&2; exit 2; }
done
# Every config in configs/reproduction/ besides the fine-tuning runs and the paper's six methods.
PAPER=" finetune_target finetune_retain ga_gd npo_gd me_gd idk_gd idk_kl idk_ap "
RECENT=$(for f in configs/reproduction/*.yaml; do n=$(basename "$f" .yaml); [[ "$PAPER" == *" $n "* ]] || echo "$n"; done)
$OBL sweep $(for m in $RECENT; do echo configs/reproduction/$m.yaml; done) --report runs/repro/recent.html \
  --title "CPU reproduction, newer methods: SmolLM2-135M, TOFU forget01 subset"
$OBL report runs/repro/{target,retain,ga_gd,npo_gd,me_gd} $(for m in $RECENT; do echo runs/repro/$m; done) \
  --out runs/repro/report_recent.html --title "CPU reproduction, newer methods against GA+GD, NPO+GD, ME+GD"
