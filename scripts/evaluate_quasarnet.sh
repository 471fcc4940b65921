#!/usr/bin/env bash
# After scripts/release_quasarnet.sh: measure the trained model on the simulated held-out set and on the
# real labelled spectra, and write the reports used by docs/quasarnet.md.
#   bash scripts/evaluate_quasarnet.sh [RUN_DIR]      (default runs/quasarnet-boss-v1)
# Release, only if the targets of issue 4 are met:
#   cp -r RUN_DIR/best src/redsift/models/released/quasarnet-boss-sim
set -euo pipefail
RUN=${1:-runs/quasarnet-boss-v2}
R=.venv/bin/redsift
$R predict data_sim/test --model "$RUN/best" -o "$RUN/test_catalog.fits" --overwrite
$R evaluate "$RUN/test_catalog.fits" --truth data_sim/test -o "$RUN/report_test" \
   --label "simulated held-out set (50,000 BOSS spectra, seed 2) - SIMULATED, not real data"
.venv/bin/python scripts/quasarnet_report.py --sim-model "$RUN/best" --test data_sim/test --n-test 10000 \
   > "$RUN/report_real_and_probe.md"
echo "reports: $RUN/report_test/summary.md, $RUN/report_real_and_probe.md"
