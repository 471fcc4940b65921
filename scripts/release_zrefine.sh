#!/usr/bin/env bash
# The quasar refinement net (issue 19; docs/eigen.md "A refinement net for quasars") as run on 2 CPU cores.
# Simulated sets are regenerated from their seeds, never committed. T: templates; D: simulated sets; R: runs.
set -euo pipefail
T=${T:-../shared/data/templates}
D=${D:-data_sim}
R=${R:-runs}
# training: 30,000 quasars per survey on BOSS pixels (seeds 1101-1103); validation 2,000 per survey (1201-1203)
for i in 1 2 3; do
  s=$(echo boss desi lamost | cut -d' ' -f$i); A=""; [ $i -gt 1 ] && A="--append"
  redsift simulate -n 30000 --survey $s --classes QSO:1 --grid boss --templates $T --seed 110$i -j 2 $A -o $D/zr_train
  redsift simulate -n 2000 --survey $s --classes QSO:1 --grid boss --templates $T --seed 120$i $A -o $D/zr_val
done
redsift train zrefine --data $D/zr_train --val $D/zr_val -o $R/zr1 --epochs 3 --batch-size 128 --lr 2e-3 \
  --lr-schedule cosine --warmup-steps 200 --threads 2 --seed 0
# continued: 5 more epochs from those weights (cosine from 1e-3; the release's net)
redsift train zrefine --data $D/zr_train --val $D/zr_val -o $R/zr2 --init $R/zr1/best --epochs 5 --batch-size 128 \
  --lr 1e-3 --lr-schedule cosine --warmup-steps 100 --threads 2 --seed 1
# then the simulator's second quasar generator (parametric: no --templates) appended, 30,000 per survey (seeds
# 1111-1113) and 2,000 per survey to validation (1211-1213), and 1 epoch more on both (docs/eigen.md)
for i in 1 2 3; do
  s=$(echo boss desi lamost | cut -d' ' -f$i)
  env -u REDSIFT_TEMPLATES redsift simulate -n 30000 --survey $s --classes QSO:1 --grid boss --seed 111$i -j 2 --append -o $D/zr_train
  env -u REDSIFT_TEMPLATES redsift simulate -n 2000 --survey $s --classes QSO:1 --grid boss --seed 121$i --append -o $D/zr_val
done
redsift train zrefine --data $D/zr_train --val $D/zr_val -o $R/zr3 --init $R/zr2/best --epochs 1 --batch-size 128 \
  --lr 5e-4 --lr-schedule cosine --warmup-steps 100 --threads 2 --seed 2
redsift release $R/zr3/best --val $D/zr_val -o $R/zr1_rel \
  --description "quasar redshift refinement net, trained on simulated BOSS, DESI and LAMOST quasars"
# the default with the net: the released parts and the net, every release decision chosen again as before
redsift combine --base redsift-sim --zrefine $R/zr1_rel -o $R/comb_zr \
  --description "redsift default: classifier + QuasarNET + eigen refinement + quasar refinement net, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/comb_zr --val $D/eig_val3x -o src/redsift/models/released/redsift-sim \
  --set zerr_rows=SIM_MODE=templates --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true \
  --set zerr_snr=true --set full_scan=true --set sign_z=2
# the window's fallback (2026-12-07, seventh session; docs/eigen.md "The window's fallback"): the same parts and
# weights, every release decision chosen again, the fallback's types among them
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-fb \
  --set zerr_rows=SIM_MODE=templates --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true \
  --set zerr_snr=true --set full_scan=true --set sign_z=2 --set scan_fallback=true
cp $R/redsift-sim-fb/config.json src/redsift/models/released/redsift-sim/config.json  # (the weights are the same)
