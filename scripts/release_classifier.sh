#!/usr/bin/env bash
# The classifier release of issue 18 and its seed-system comparison, as run (2 CPU cores; see
# docs/classifier.md for the timings and the numbers). Simulated sets are regenerated from their seeds,
# never committed. T: the templates directory; D: where the sets go; R: runs.
set -euo pipefail
T=${T:-../shared/data/templates}
D=${D:-data_sim}
R=${R:-runs}
MIX=QSO:0.25,STAR:0.6,GALAXY:0.15     # classifier sets: every class learned (stars: each letter equally)
QMIX=QSO:0.6,STAR:0.25,GALAXY:0.15    # QuasarNET sets: quasar targets
i=0
for s in boss desi lamost; do
  i=$((i+1)); A=""; [ $i -gt 1 ] && A="--append"
  # training and validation sets on the classifier grid and (same seeds: the same objects) on the SDSS
  # 12-class CNN's grid; QuasarNET-mix sets on QuasarNET's grid; held-out test sets on BOSS pixels
  redsift simulate -n 40000 --survey $s --classes $MIX --star-mix uniform --grid classifier --templates $T --seed 10$i -j 2 $A -o $D/train_cls
  redsift simulate -n 3000  --survey $s --classes $MIX --star-mix uniform --grid classifier --templates $T --seed 20$i -j 2 $A -o $D/val_cls
  redsift simulate -n 20000 --survey $s --classes $MIX --star-mix uniform --grid sdss12 --templates $T --seed 10$i -j 2 $A -o $D/train_sdss12
  redsift simulate -n 3000  --survey $s --classes $MIX --star-mix uniform --grid sdss12 --templates $T --seed 20$i $A -o $D/val_sdss12
  redsift simulate -n 20000 --survey $s --classes $QMIX --star-mix uniform --grid quasarnet --templates $T --seed 11$i -j 2 $A -o $D/train_qn
  redsift simulate -n 2000  --survey $s --classes $QMIX --star-mix uniform --grid quasarnet --templates $T --seed 21$i $A -o $D/val_qn
  redsift simulate -n 4000  --survey $s --classes $MIX --star-mix uniform --grid boss --templates $T --seed 30$i -o $D/test_$s
done
redsift simulate -n 4000 --survey boss --grid boss --templates $T --seed 401 -o $D/test_boss_targets

# redsift's classifier (boss14 taxonomy, flux + noise + survey inputs, Gaussian redshift head)
redsift train classifier --data $D/train_cls --val $D/val_cls -o $R/cls1 --epochs 10 --batch-size 256 --lr 2e-3 \
  --lr-schedule cosine --threads 2 --checkpoint-every 300 --patience 10
redsift release $R/cls1/best --val $D/val_cls -o $R/cls1/release
# QuasarNET on all three surveys (fine-tuned from the BOSS-only release), then the default = both together
redsift train quasarnet --data $D/train_qn --val $D/val_qn -o $R/qn_multi --init quasarnet-boss-sim --epochs 2 \
  --lr 3e-4 --lr-schedule cosine --threads 2
redsift release $R/qn_multi/best --val $D/val_qn -o $R/qn_multi/release
redsift combine --classifier $R/cls1/release --quasarnet $R/qn_multi/release --rule classifier -o $R/combined
# after the sky fix (2026-11-29: docs/simulation.md): every set above simulated again from the same seeds with
# the corrected sky and gains, the classifier fine-tuned from its first release, and the default made again
# (with the eigen part of scripts/release_eigen.sh)
redsift train classifier --data $D/train_cls --val $D/val_cls -o $R/cls2 --init $R/cls1/release --epochs 6 \
  --batch-size 256 --lr 1e-3 --lr-schedule cosine --threads 2 --checkpoint-every 300 --patience 10
redsift release $R/cls2/best --val $D/val_cls -o $R/cls2/release
redsift combine --classifier $R/cls2/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim \
  -o src/redsift/models/released/redsift-sim \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
# held-out evaluation (every model, every test set)
for s in boss desi lamost boss_targets; do
  redsift predict $D/test_$s --model $R/combined -o $R/eval/comb_$s.fits --overwrite
  redsift evaluate $R/eval/comb_$s.fits --truth $D/test_$s -o $R/eval/comb_$s --label "combined, simulated held-out $s"
done
# the seed systems, same data (the SDSS 12-class CNN on its own grid: the same objects, seeds 101-103)
redsift train classifier --data $D/train_sdss12 --val $D/val_sdss12 -o $R/sdss12 --set preset=sdss12 --epochs 5 \
  --batch-size 256 --lr 1e-3 --lr-schedule cosine --threads 2
redsift train classifier --data $D/train_qn --val $D/val_qn -o $R/fcz --set preset=fcz --epochs 2 --batch-size 256 \
  --lr 1e-3 --lr-schedule cosine --threads 2
redsift train classifier --data $D/train_cls --val $D/val_cls -o $R/gasnet2 --set preset=gasnet2 --epochs 1 \
  --batch-size 256 --lr 2e-3 --lr-schedule cosine --threads 2
for m in sdss12 fcz gasnet2; do redsift release $R/$m/best --val $D/val_cls -o $R/$m/release; done
# the real checks (validation only)
python scripts/validate_real.py redsift-sim quasarnet-multi-sim -o docs/classifier_real.md   # once released
# later the same day (docs/classifier.md "The BAL decision", "ZERR where the eigen scan gives Z"): the same
# classifier weights released again (the BAL threshold at 97% of validation non-BALs kept QSO), QuasarNET
# fine-tuned 2 epochs on the QuasarNET-mix sets simulated again on the corrected sky, and the default made
# again and released on the three-survey eigen validation set of scripts/release_eigen.sh
redsift release $R/cls2/best --val $D/val_cls -o $R/cls3/release
redsift train quasarnet --data $D/train_qn --val $D/val_qn -o $R/qn_multi2 --init quasarnet-multi-sim --epochs 2 \
  --lr 3e-4 --lr-schedule cosine --threads 2
redsift release $R/qn_multi2/best --val $D/val_qn -o src/redsift/models/released/quasarnet-multi-sim \
  --description "QuasarNET trained by redsift on simulated BOSS, DESI and LAMOST spectra (corrected sky)"
redsift combine --classifier $R/cls3/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim -o $R/redsift-sim-c \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/redsift-sim-c --val $D/eig_val3 -o src/redsift/models/released/redsift-sim
# quasar errors over two generators (docs/classifier.md "Quasar errors over two generators"): the validation
# sets get as many parametric-mode quasars (a generator neither model learnt from) as they hold template-mode
# ones, per survey; the classifier (ZERR cells, BAL threshold) and the default (its eigen part's ZERR) are
# released again on them. Held-out parametric quasars: seeds 901-903.
cp -r $D/val_cls $D/val_clsx; cp -r $D/eig_val3 $D/eig_val3x
i=1
for s in boss desi lamost; do
  REDSIFT_TEMPLATES= redsift simulate -n 750 --survey $s --classes QSO:1.0 --grid classifier --seed 23$i -j 2 --append -o $D/val_clsx
  REDSIFT_TEMPLATES= redsift simulate -n 1050 --survey $s --classes QSO:1.0 --grid boss --seed 73$i -j 2 --append -o $D/eig_val3x
  REDSIFT_TEMPLATES= redsift simulate -n 2000 --survey $s --classes QSO:1.0 --grid boss --seed 90$i -j 2 -o $D/param_qso_$s
  i=$((i+1))
done
redsift release $R/cls2/best --val $D/val_clsx -o $R/cls4/release
redsift combine --classifier $R/cls4/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim -o $R/redsift-sim-x \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/redsift-sim-x --val $D/eig_val3x -o src/redsift/models/released/redsift-sim
# the classifier trained on both quasar generators (docs/classifier.md "Trained on both quasar generators"): the
# training set gets 10,000 parametric-mode quasars per survey (seeds 131-133), 3 epochs from the release above;
# the default made again with it and the eigen release with the learned anomaly score (scripts/release_eigen.sh)
cp -r $D/train_cls $D/train_clsx
i=1
for s in boss desi lamost; do
  REDSIFT_TEMPLATES= redsift simulate -n 10000 --survey $s --classes QSO:1.0 --grid classifier --seed 13$i -j 2 --append -o $D/train_clsx
  i=$((i+1))
done
redsift train classifier --data $D/train_clsx --val $D/val_clsx -o $R/cls5 --init $R/cls4/release --epochs 3 \
  --batch-size 256 --lr 5e-4 --lr-schedule cosine --threads 2
redsift release $R/cls5/best --val $D/val_clsx -o $R/cls5/release
redsift combine --classifier $R/cls5/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim -o $R/redsift-sim-9 \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/redsift-sim-9 --val $D/eig_val3x -o src/redsift/models/released/redsift-sim
python scripts/validate_real.py redsift-sim quasarnet-multi-sim -o docs/classifier_real.md
# the same weights released again with the galaxy redshift flag per survey (p_peak_cells: DESI galaxies flagged
# below a pdf-peak probability of 0.96 so that <= 1% of the unflagged validation galaxies are catastrophic)
redsift release $R/cls5/best --val $D/val_clsx -o $R/cls6/release
redsift combine --classifier $R/cls6/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim -o $R/redsift-sim-10 \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/redsift-sim-10 --val $D/eig_val3x -o src/redsift/models/released/redsift-sim
# tried, not adopted (docs/classifier.md "Galaxies from z 0.002 in the classifier's training"): 10,000 galaxies
# per survey from today's simulator appended to training and 750 to validation, 2 epochs from the release
cp -r $D/train_clsx $D/train_clsg; cp -r $D/val_clsx $D/val_clsg
i=1
for s in boss desi lamost; do
  redsift simulate -n 10000 --survey $s --classes GALAXY:1.0 --grid classifier --templates $T --seed 14$i -j 2 --append -o $D/train_clsg
  redsift simulate -n 750 --survey $s --classes GALAXY:1.0 --grid classifier --templates $T --seed 24$i -j 2 --append -o $D/val_clsg
  redsift simulate -n 2000 --survey $s --classes GALAXY:1.0 --grid boss --templates $T --seed 95$i -j 2 -o $D/test_gal_$s
  i=$((i+1))
done
redsift train classifier --data $D/train_clsg --val $D/val_clsg -o $R/cls7 --init $R/cls6/release --epochs 2 \
  --batch-size 256 --lr 3e-4 --lr-schedule cosine --threads 2 --checkpoint-every 300
redsift release $R/cls7/best --val $D/val_clsg -o $R/cls7/release
redsift combine --classifier $R/cls7/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim -o $R/redsift-sim-12 \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/redsift-sim-12 --val $D/eig_val3x -o $R/redsift-sim-12/release
# second try, not adopted (docs/classifier.md): the new galaxies in place of the old ones, as many per survey
# (train_clsr), one epoch at lr 2e-4
python scripts/replace_class_rows.py $D/train_clsg --first-new 150000 --cls GALAXY -o $D/train_clsr
redsift train classifier --data $D/train_clsr --val $D/val_clsg -o $R/cls8 --init $R/cls6/release --epochs 1 \
  --batch-size 256 --lr 2e-4 --lr-schedule cosine --threads 2 --checkpoint-every 300
redsift release $R/cls8/best --val $D/val_clsg -o $R/cls8/release
# the classifier trained from the start on today's simulator (2026-12-07, seventh session; docs/classifier.md "The
# classifier trained again from the start on today's simulator": measured, not adopted; its weights kept in
# checkpoints/classifier-s35b). Stage 1: the recipe above from the start; stage 2: a fresh set, 4 epochs from it.
i=0
for s in boss desi lamost; do
  i=$((i+1)); A=""; [ $i -gt 1 ] && A="--append"
  redsift simulate -n 40000 --survey $s --classes $MIX --star-mix uniform --grid classifier --templates $T --seed 15$i -j 2 $A -o $D/train_cls35
  redsift simulate -n 3000  --survey $s --classes $MIX --star-mix uniform --grid classifier --templates $T --seed 25$i -j 2 $A -o $D/val_cls35
  redsift simulate -n 40000 --survey $s --classes $MIX --star-mix uniform --grid classifier --templates $T --seed 17$i -j 2 $A -o $D/train_cls35b
done
i=0
for s in boss desi lamost; do
  i=$((i+1))
  REDSIFT_TEMPLATES= redsift simulate -n 10000 --survey $s --classes QSO:1.0 --grid classifier --seed 16$i -j 2 --append -o $D/train_cls35
  REDSIFT_TEMPLATES= redsift simulate -n 750 --survey $s --classes QSO:1.0 --grid classifier --seed 26$i -j 2 --append -o $D/val_cls35
  REDSIFT_TEMPLATES= redsift simulate -n 10000 --survey $s --classes QSO:1.0 --grid classifier --seed 18$i -j 2 --append -o $D/train_cls35b
done
redsift train classifier --data $D/train_cls35 --val $D/val_cls35 -o $R/cls35 --epochs 10 --batch-size 256 --lr 2e-3 \
  --lr-schedule cosine --threads 2 --checkpoint-every 300 --patience 10
redsift train classifier --data $D/train_cls35b --val $D/val_cls35 -o $R/cls35b --init $R/cls35/best --epochs 4 \
  --batch-size 256 --lr 7e-4 --lr-schedule cosine --threads 2 --checkpoint-every 300 --patience 10
redsift release $R/cls35b/best --val $D/val_cls35 -o $R/cls35b/release
redsift combine --base src/redsift/models/released/redsift-sim --classifier $R/cls35b/release -o $R/comb35b \
  --description "redsift default: classifier + QuasarNET + eigen refinement + quasar refinement net, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/comb35b --val $D/eig_val3x -o $R/redsift-sim-35b --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true --set full_scan=true --set sign_z=2
# stage 3 (same session; measured, not adopted): another fresh set, 3 epochs from stage 2
i=0
for s in boss desi lamost; do
  i=$((i+1)); A=""; [ $i -gt 1 ] && A="--append"
  redsift simulate -n 40000 --survey $s --classes $MIX --star-mix uniform --grid classifier --templates $T --seed 19$i -j 2 $A -o $D/train_cls35c
done
for i in 5 6 7; do
  s=$(echo boss desi lamost | cut -d' ' -f$((i-4)))
  REDSIFT_TEMPLATES= redsift simulate -n 10000 --survey $s --classes QSO:1.0 --grid classifier --seed 19$i -j 2 --append -o $D/train_cls35c
done
redsift train classifier --data $D/train_cls35c --val $D/val_cls35 -o $R/cls35c --init $R/cls35b/best --epochs 3 \
  --batch-size 256 --lr 4e-4 --lr-schedule cosine --threads 2 --checkpoint-every 300 --patience 10
# eighth session (2026-12-07): stage 2 adopted, judged on a fresh BOSS held-out set four times larger (rule fixed first,
# docs/classifier.md "The retrained classifier adopted"); the release with every option, the window's fallback included
redsift simulate -n 16000 --survey boss --classes QSO:0.25,STAR:0.6,GALAXY:0.15 --star-mix uniform --grid boss \
  --templates $T --seed 3601 -j 2 -o $D/test_boss16
redsift release $R/comb35b --val $D/eig_val3x -o $R/redsift-sim-36g --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true --set full_scan=true \
  --set sign_z=2 --set scan_fallback=true
cp $R/redsift-sim-36g/model.safetensors $R/redsift-sim-36g/config.json src/redsift/models/released/redsift-sim/
# ninth session (2026-12-07): DELTACHI2 for every answer of the default and SMALL_DELTA_CHI2 per cell (docs/classifier.md
# "DELTACHI2 for every answer"); every other decision chosen again, the same
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-37 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true --set full_scan=true \
  --set sign_z=2 --set scan_fallback=true --set dchi2_flag=true
cp $R/redsift-sim-37/config.json src/redsift/models/released/redsift-sim/config.json
# the same, with NO_SIGNAL (pure noise answered with confidence; docs/classifier.md "Pure noise"): the release now in redsift-sim
python scripts/noise_check.py $D
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-37n --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true --set full_scan=true \
  --set sign_z=2 --set scan_fallback=true --set dchi2_flag=true --set no_signal=true
cp $R/redsift-sim-37n/config.json src/redsift/models/released/redsift-sim/config.json
python scripts/noise_check.py $D --seed 2 -n 1000
python scripts/validate_real.py redsift-sim quasarnet-multi-sim -o docs/classifier_real.md
