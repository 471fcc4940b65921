#!/usr/bin/env bash
# The released QuasarNET model (issue 4): data, training, evaluation. Resumable: re-running skips
# finished steps and resumes training from runs/quasarnet-boss-v1/checkpoint.pt.
#   bash scripts/release_quasarnet.sh            (from the repository root, with make venv done)
set -euo pipefail
TEMPLATES=${REDSIFT_TEMPLATES:-../shared/data/templates}
R=.venv/bin/redsift
mkdir -p data_sim runs
# training set: 300,000 simulated BOSS spectra (template mode, BOSS quasar-target class mix), seed 1
[ -f data_sim/train/index.json ] && [ "$($R dataset data_sim/train | head -1 | grep -c '300000 spectra')" = 1 ] || \
  { rm -rf data_sim/train; $R simulate -n 300000 --survey boss --templates "$TEMPLATES" --seed 1 -j 2 -o data_sim/train; }
# validation set (early stopping): 20,000, seed 3
[ -f data_sim/val/index.json ] || $R simulate -n 20000 --survey boss --templates "$TEMPLATES" --seed 3 -j 2 -o data_sim/val
# held-out test set: 50,000, seed 2, the same published class mix (QSO 0.6, STAR 0.25, GALAXY 0.15) and S/N model
[ -f data_sim/test/index.json ] || $R simulate -n 50000 --survey boss --templates "$TEMPLATES" --seed 2 -j 2 -o data_sim/test
# training: 30 epochs at most, early stopping (patience 5), checkpoints every 500 steps
if [ -f runs/quasarnet-boss-v1/checkpoint.pt ]; then
  $R train quasarnet -o runs/quasarnet-boss-v1 --resume --epochs 30
else
  $R train quasarnet --data data_sim/train --val data_sim/val -o runs/quasarnet-boss-v1 --epochs 30 \
     --seed 1 --patience 5 --checkpoint-every 500 --threads 2
fi
