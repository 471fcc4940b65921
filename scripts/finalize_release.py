"""Make a release directory from a trained model: the BAL threshold is chosen on the VALIDATION set.

    python scripts/finalize_release.py MODEL_DIR VAL_DATASET OUT_DIR [--name NAME]

QuasarNET's finders are trained with the balanced weights of the paper's eq. 1, so the BAL finder's
confidence of a non-BAL quasar is inflated by roughly the ratio of empty to full BAL boxes (~1:100);
the threshold that separates BALs from non-BALs is therefore a property of the trained model, chosen
here where min(BAL completeness, non-BAL rejection) is largest on the validation set (never on the
held-out set the model is judged on). The quasar threshold c_th stays at the nominal 0.4.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.table import Table, join

from redsift.data.store import Dataset
from redsift.evaluate.metrics import bal_threshold

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("val")
p.add_argument("out")
p.add_argument("--description", default="QuasarNET trained by redsift on simulated BOSS spectra (template mode)")
a = p.parse_args()

out = Path(a.out)
cat = out.parent / f".{out.name}-val.fits"
subprocess.run([sys.executable, "-m", "redsift", "predict", a.val, "--model", a.model, "-o", str(cat),
                "--overwrite", "--quiet"], check=True)
c = Table.read(cat)["TARGETID", "C_BAL", "IS_QSO"]
m = Dataset(a.val).meta["TARGETID", "CLASS", "Z", "BAL_FLAG"]
t = join(c, m, keys="TARGETID")
th, met = bal_threshold(t["C_BAL"], t["IS_QSO"], t["BAL_FLAG"], np.asarray(t["CLASS"]).astype(str) == "QSO", t["Z"])
cat.unlink()

tmp = out.parent / f".{out.name}.tmp"
shutil.rmtree(tmp, ignore_errors=True)
shutil.copytree(a.model, tmp)
cfg = json.loads((tmp / "config.json").read_text())
cfg["config"]["c_bal"] = th
cfg["description"] = a.description
cfg["bal_threshold"] = {"c_bal": th, "chosen_on": str(a.val), "rule": "max min(completeness, rejection)",
                        "validation": {k: (float(v) if isinstance(v, (float, np.floating)) else int(v))
                                       for k, v in met.items()}}
(tmp / "config.json").write_text(json.dumps(cfg, indent=1))
shutil.rmtree(out, ignore_errors=True)
tmp.rename(out)
print(f"{out}: c_bal = {th} (validation: BAL completeness {met['bal_completeness']:.4f}, "
      f"non-BAL rejection {met['nonbal_rejection']:.4f})")
