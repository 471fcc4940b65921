#!/usr/bin/env bash
# After scripts/release_quasarnet.sh: fix the release decisions on the validation set, then measure
# the model on the simulated held-out set and on the real labelled spectra (reports used by
# docs/quasarnet.md).
#   bash scripts/evaluate_quasarnet.sh [RUN_DIR]      (default runs/quasarnet-boss-v3)
set -euo pipefail
RUN=${1:-runs/quasarnet-boss-v3}
R=.venv/bin/redsift
# c_bal and z_method chosen on the validation set (seed 3); c_th = 0.4, n_lines = 1 (nominal)
.venv/bin/redsift release "$RUN/best" --val data_sim/val -o "$RUN/release"
$R predict data_sim/test --model "$RUN/release" -o "$RUN/test_catalog.fits" --overwrite
$R evaluate "$RUN/test_catalog.fits" --truth data_sim/test -o "$RUN/report_test" \
   --label "simulated held-out set (50,000 BOSS spectra, seed 2) - SIMULATED, not real data"
.venv/bin/python scripts/quasarnet_report.py --sim-model "$RUN/release" --test data_sim/test --n-test 10000 \
   > "$RUN/report_real_and_probe.md"
echo "reports: $RUN/report_test/summary.md, $RUN/report_real_and_probe.md"
echo "release (if the targets are met): cp -r $RUN/release src/redsift/models/released/quasarnet-boss-sim"
