#!/usr/bin/env bash
# The eigen family of issue 19 as run (2 CPU cores; numbers in docs/eigen.md). Simulated sets are regenerated
# from their seeds, never committed. T: templates; D: simulated sets; R: runs. Redrock: a venv with
# redrock==0.21.0 (../shared/peers/README.md).
set -euo pipefail
T=${T:-../shared/data/templates}
D=${D:-data_sim}
R=${R:-runs}
RR=${RR:-/tmp/venv-rr/bin/python}
MIX=QSO:0.35,STAR:0.4,GALAXY:0.25
# training, validation (release decisions, refinement rule, anomaly score choice) and held-out test, BOSS pixels
redsift simulate -n 30000 --survey boss --classes $MIX --star-mix uniform --grid boss --templates $T --seed 501 -j 2 -o $D/eig_train
redsift simulate -n 3000 --survey boss --classes $MIX --star-mix uniform --grid boss --templates $T --seed 701 -o $D/eig_val
redsift simulate -n 4000 --survey boss --classes QSO:0.25,STAR:0.6,GALAXY:0.15 --star-mix uniform --grid boss --templates $T --seed 601 -o $D/eig_test_boss
# the K study (K = 3, 5, 10); K = 5 is released
for K in 3 5 10; do
  redsift train eigen --data $D/eig_train -o $R/eigen_k$K --ncomp $K --set max_per_class=2000 --set em_iter=20 --threads 2
  redsift release $R/eigen_k$K/best --val $D/eig_val -o $R/eigen_k$K/release
  redsift predict $D/eig_test_boss --model $R/eigen_k$K/release -o $R/eval19/eig${K}_test.fits --overwrite
  redsift evaluate $R/eval19/eig${K}_test.fits --truth $D/eig_test_boss -o $R/eval19/eig${K}_test --label "eigen K=$K, simulated held-out BOSS"
done
redsift release $R/eigen_k5/best --val $D/eig_val -o src/redsift/models/released/eigen-boss-sim \
  --description "eigenspectra (K=5 per boss14 class) + chi-square scan, learned from simulated BOSS spectra (GaSNet-III style)"
# the default: classifier + QuasarNET + the scan refining the classifier's redshift
redsift combine --classifier $R/cls1/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim -o $R/redsift-sim \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
for s in eig_val eig_test_boss; do
  redsift predict $D/$s --model $R/redsift-sim -o $R/eval19/comb_$s.fits --overwrite
done
# anomalies: a model without CV templates (the absent class), anomalies injected into validation (score chosen)
# and test (reported)
redsift train eigen --data $D/eig_train -o $R/eigen_k5_nocv --ncomp 5 --set max_per_class=2000 --set em_iter=20 --set exclude=CV
redsift release $R/eigen_k5_nocv/best --val $D/eig_val -o $R/eigen_k5_nocv/release
python scripts/eigen_anomalies.py $D/eig_val -o $D/eig_anom_val --per-kind 200 --normal 1000 --seed 8
python scripts/eigen_anomalies.py $D/eig_test_boss -o $D/eig_anom --per-kind 300 --normal 1500 --seed 7
redsift predict $D/eig_anom --model $R/eigen_k5_nocv/release -o $R/eval19/anom.fits --overwrite
redsift evaluate $R/eval19/anom.fits --truth $D/eig_anom -o $R/eval19/anom --label "eigen K=5 without CV templates, injected anomalies (simulated)"
# Redrock on 300 of the same simulated spectra (100 per class) and on the real BOSS fixtures
python scripts/sim_to_spec.py $D/eig_test_boss -o $D/rr_spec --per-class 100
$RR ../shared/peers/redrock_boss.py --files $D/rr_spec/spec-*.fits --out $R/eval19/rr_sim.csv --ncpu 1
$RR ../shared/peers/redrock_boss.py --files ../shared/data/real/boss/spec-*.fits --out $R/eval19/rr_real.csv --ncpu 1
python scripts/eigen_real.py --models eigen-boss-sim redsift-sim --redrock $R/eval19/rr_real.csv
# speed, one core, side by side with Redrock
taskset -c 0 python benchmarks/bench_eigen.py --model eigen-boss-sim --files "$D/rr_spec/spec-*.fits" --redrock-python $RR
# per-survey ZERR (2026-11-29, docs/classifier.md "ZERR where the eigen scan gives Z"): a validation set of all
# three surveys on BOSS pixels; the eigen release calibrates its full scan and its anomaly threshold per survey,
# the default's release calibrates the eigen part on the rows its refinement gives Z
for i in 1 2 3; do
  s=$(echo boss desi lamost | cut -d' ' -f$i); A=""; [ $i -gt 1 ] && A="--append"
  redsift simulate -n 3000 --survey $s --classes $MIX --star-mix uniform --grid boss --templates $T --seed 71$i -j 2 $A -o $D/eig_val3
done
redsift release $R/eigen_k5/best --val $D/eig_val3 -o src/redsift/models/released/eigen-boss-sim \
  --description "eigenspectra (K=5 per boss14 class) + chi-square scan, learned from simulated BOSS spectra (GaSNet-III style); ZERR and anomaly thresholds per survey (BOSS, DESI, LAMOST validation)"
redsift combine --classifier $R/cls2/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim -o $R/redsift-sim-c \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/redsift-sim-c --val $D/eig_val3 -o src/redsift/models/released/redsift-sim
# the learned anomaly score (docs/eigen.md "A learned anomaly score"): fitted at release on injected anomalies
# (without CV templates: all four kinds; each kind also left out of the fit), measured on the held-out injections
redsift release $R/eigen_k5_nocv/best --val $D/eig_anom_val -o $R/anom/nocv_all
redsift predict $D/eig_anom --model $R/anom/nocv_all -o $R/anom/test_all.fits --overwrite
redsift evaluate $R/anom/test_all.fits --truth $D/eig_anom -o $R/anom/ev_all \
  --label "eigen K=5 without CV templates, learned anomaly score, injected anomalies (simulated)"
for k in two-redshifts star+galaxy artefact absent-class; do
  keep=$(echo two-redshifts,star+galaxy,artefact,absent-class | tr ',' '\n' | grep -vx -- "$k" | paste -sd,)
  python scripts/eigen_anomalies.py $D/eig_val -o $R/anom/val_no_$k --per-kind 200 --normal 1000 --seed 8 --kinds $keep
  redsift release $R/eigen_k5_nocv/best --val $R/anom/val_no_$k -o $R/anom/nocv_no_$k
  redsift predict $D/eig_anom --model $R/anom/nocv_no_$k -o $R/anom/test_no_$k.fits --overwrite
done
# the released model (it has CV templates: no absent class) on the three-survey validation set with injections
python scripts/eigen_anomalies.py $D/eig_val3 -o $D/eig_anom_val3 --per-kind 600 --normal 9000 --seed 9 \
  --kinds two-redshifts,star+galaxy,artefact
python scripts/eigen_anomalies.py $D/eig_test_boss -o $D/eig_anom3 --per-kind 300 --normal 1500 --seed 7 \
  --kinds two-redshifts,star+galaxy,artefact
redsift release $R/eigen_k5/best --val $D/eig_anom_val3 -o src/redsift/models/released/eigen-boss-sim \
  --description "eigenspectra (K=5 per boss14 class) + chi-square scan, learned from simulated BOSS spectra (GaSNet-III style); ZERR and anomaly thresholds per survey (BOSS, DESI, LAMOST validation); learned anomaly score"
redsift predict $D/eig_anom3 --model eigen-boss-sim -o $R/anom/rel_new_anom3.fits --overwrite
# an experiment, measured and NOT adopted (docs/classifier.md "Eigenspectra from both quasar generators: tried,
# not adopted"): the default's eigen part learnt with 10,500 parametric-mode quasars beside the template ones
cp -r $D/eig_train $D/eig_train2
REDSIFT_TEMPLATES= redsift simulate -n 10500 --survey boss --classes QSO:1.0 --grid boss --seed 541 -j 2 --append -o $D/eig_train2
redsift train eigen --data $D/eig_train2 -o $R/eigen_2gen --ncomp 5 --set max_per_class=2000 --set em_iter=20 --threads 2
redsift release $R/eigen_2gen/best --val $D/eig_anom_val3 -o $R/eigen_2gen/release
redsift combine --classifier $R/cls6/release --quasarnet quasarnet-multi-sim --eigen $R/eigen_2gen/release -o $R/redsift-sim-11 \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/redsift-sim-11 --val $D/eig_val3x -o $R/redsift-sim-11/release
# the learned score with three times the validation injections (docs/eigen.md: 0.931, no gain)
redsift simulate -n 6000 --survey boss --classes $MIX --star-mix uniform --grid boss --templates $T --seed 702 -j 2 -o $D/eig_val_big
python scripts/eigen_anomalies.py $D/eig_val_big -o $R/anom/val_big --per-kind 600 --normal 3000 --seed 10
redsift release $R/eigen_k5_nocv/best --val $R/anom/val_big -o $R/anom/nocv_big
redsift predict $D/eig_anom --model $R/anom/nocv_big -o $R/anom/test_big.fits --overwrite
# the residuals' shape in the learned score (docs/eigen.md "The residuals' shape"): the same fits and held-out
# sets as above with five more inputs (neighbour correlation, outlier fraction, 5-pixel peak and trough, blue/red
# tilt); the model without CV templates, every kind and each kind left out; then the released model (its ZERR
# cells per class and class / survey since zerr_by_class: the same command, run again)
redsift release $R/eigen_k5_nocv/best --val $D/eig_anom_val -o $R/anom/nocv_res
redsift predict $D/eig_anom --model $R/anom/nocv_res -o $R/anom/test_res.fits --overwrite
redsift evaluate $R/anom/test_res.fits --truth $D/eig_anom -o $R/anom/ev_res \
  --label "eigen K=5 without CV templates, learned anomaly score with residual shape, injected anomalies (simulated)"
for k in two-redshifts star+galaxy artefact absent-class; do
  redsift release $R/eigen_k5_nocv/best --val $R/anom/val_no_$k -o $R/anom/nocvres_no_$k
  redsift predict $D/eig_anom --model $R/anom/nocvres_no_$k -o $R/anom/testres_no_$k.fits --overwrite
done
redsift release $R/eigen_k5/best --val $D/eig_anom_val3 -o src/redsift/models/released/eigen-boss-sim \
  --description "eigenspectra (K=5 per boss14 class) + chi-square scan, learned from simulated BOSS spectra (GaSNet-III style); ZERR and anomaly thresholds per survey (BOSS, DESI, LAMOST validation); learned anomaly score"
redsift predict $D/eig_anom3 --model eigen-boss-sim -o $R/anom/rel_res_anom3.fits --overwrite
# the default's eigen ZERR cells per class and class / survey (docs/classifier.md "Star errors per class"): the
# same classifier release, the eigen release above, released again on the same validation set
redsift combine --classifier $R/cls6/release --quasarnet quasarnet-multi-sim --eigen eigen-boss-sim -o $R/redsift-sim-13 \
  --description "redsift default: classifier + QuasarNET + eigen refinement, trained on simulated BOSS, DESI and LAMOST spectra"
redsift release $R/redsift-sim-13 --val $D/eig_val3x -o src/redsift/models/released/redsift-sim
# the released model's score on injections into the DESI and LAMOST held-out sets (docs/eigen.md)
for s in desi lamost; do
  python scripts/eigen_anomalies.py $D/test_$s -o $R/anom/anom3_$s --per-kind 300 --normal 1500 --seed 7 \
    --kinds two-redshifts,star+galaxy,artefact
  redsift predict $R/anom/anom3_$s --model eigen-boss-sim -o $R/anom/rel_cls_anom3_$s.fits --overwrite
done
# the default released again with the chi-square arbitration (docs/classifier.md "Chi-square arbitration"): the
# same weights; the release chooses, per type / survey on the validation set, the chi-square gain above which
# the eigen scan of the answered class over its whole range replaces the classifier's redshift (2026-11-30)
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim17
cp $R/redsift-sim17/config.json src/redsift/models/released/redsift-sim/config.json
# and with the BAL decision of both parts (mean of the classifier's BAL share and QuasarNET's C_BAL, threshold at
# QuasarNET's operating point on the same validation set; docs/classifier.md "The BAL decision of both parts")
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim18
cp $R/redsift-sim18/config.json src/redsift/models/released/redsift-sim/config.json
# the classifier's ZERR where the default gives its Z (docs/classifier.md "Quasar errors where the classifier gives
# Z"): two-parameter cells fitted by the default's release on those validation rows, the template-mode quasars
# only (the validation set's parametric half has narrower errors than the held-out sets and real spectra); every
# other decision as before (same validation set, same choices)
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-14 --set zerr_rows=SIM_MODE=templates
# ... and every ZERR cell of the default (eigen and classifier) aimed at the middle of both coverage bands rather
# than at exactly 68% (docs/classifier.md, same section): the release now in redsift-sim
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-16 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true
cp $R/redsift-sim-16/config.json src/redsift/models/released/redsift-sim/config.json
# ... and with the type arbitration (docs/classifier.md "Chi-square arbitration of the type"): per survey, the
# classifier's type probability below which the eigen scan over every class may replace an answer of another
# type, chosen on the same validation set; every other decision as before (2026-12-07)
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-19 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true
cp $R/redsift-sim-19/config.json src/redsift/models/released/redsift-sim/config.json
# ... and with the second-peak arbitration (docs/classifier.md "Chi-square arbitration at the pdf's second peak"):
# per type / survey, the second peak's least probability and the least chi-square gain at which the eigen window
# there replaces the answer
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-20 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true
cp $R/redsift-sim-20/config.json src/redsift/models/released/redsift-sim/config.json
# ... and with the refinement's ZERR cells of galaxies and quasars split by S/N (docs/classifier.md "Cells by S/N")
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-21 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true
cp $R/redsift-sim-21/config.json src/redsift/models/released/redsift-sim/config.json
# ... and every row scanned over every class for the eigen part's learned anomaly score (docs/eigen.md "The default's
# anomaly score"; measured also with --set anomaly_flag=true, not adopted): the release now in redsift-sim
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-22 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true --set full_scan=true
cp $R/redsift-sim-22/config.json src/redsift/models/released/redsift-sim/config.json
redsift predict $D/eig_anom3 --model redsift-sim -o $R/anom/default_anom3.fits --overwrite
# ... re-released after the second-peak fix (predict now reads the peak's probability, so the classifier's quasar
# ZERR cells are fitted on the rows that really keep its answer), first with the choices as before (sign_z = 0),
# then with a cell turned on only where its net gain clears the sign test at 2 standard deviations: the release now
# in redsift-sim (docs/classifier.md "Cells turned on by a handful of rows")
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-23 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true --set full_scan=true
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/redsift-sim-24 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true --set full_scan=true \
  --set sign_z=2
cp $R/redsift-sim-24/config.json src/redsift/models/released/redsift-sim/config.json
# measured, not adopted (docs/classifier.md "A validation set three times larger"): every decision made on eig_val3x
# plus, per survey, two more mixed sets and parametric quasars (36,450 spectra)
cp -r $D/eig_val3x $D/eig_val3y
i=1
for s in boss desi lamost; do
  for k in 81 82; do
    redsift simulate -n 3000 --survey $s --classes $MIX --star-mix uniform --grid boss --templates $T --seed $k$i -j 2 --append -o $D/eig_val3y
  done
  REDSIFT_TEMPLATES= redsift simulate -n 2100 --survey $s --classes QSO:1.0 --grid boss --seed 83$i -j 2 --append -o $D/eig_val3y
  i=$((i+1))
done
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3y -o $R/redsift-sim-25 --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set type_arbitrate=true --set peak_arbitrate=true --set zerr_snr=true --set full_scan=true \
  --set sign_z=2
# measured, not adopted (docs/classifier.md "High-redshift quasars refined too"): the consistency gate, with and
# without the refinement bins
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/gate-bins --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set refine_bins=true --set refine_gate=true
redsift release src/redsift/models/released/redsift-sim --val $D/eig_val3x -o $R/gate --set zerr_rows=SIM_MODE=templates \
  --set zerr_bands=true --set refine_gate=true
# EM-PCA against a linear decoder trained by gradient descent (2026-12-07, ninth session; docs/eigen.md "EM-PCA
# against a linear decoder"): the same rows, K = 5, each released on eig_val and scanned on the held-out set
redsift train eigen --data $D/eig_train -o $R/eigen_k5_dec --ncomp 5 --set max_per_class=2000 --set learn=decoder \
  --set dec_lr=1.0 --set dec_epochs=90 --threads 2
for m in eigen_k5 eigen_k5_dec; do
  redsift release $R/$m/best --val $D/eig_val -o $R/$m/release
  redsift predict $D/eig_test_boss --model $R/$m/release -o $R/eval19/${m}_test.fits --overwrite
  redsift evaluate $R/eval19/${m}_test.fits --truth $D/eig_test_boss -o $R/eval19/${m}_test --label "$m, simulated held-out BOSS"
done
