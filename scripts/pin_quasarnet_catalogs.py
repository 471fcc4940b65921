"""Pin QuasarNET catalogs so that refactors of the generic machinery can be checked value for value.

    python scripts/pin_quasarnet_catalogs.py [OUT_DIR] [--sim-only]     (default: tests/data/pins)

Writes, for the default release and the imported qn6 model, the catalog of every real fixture spectrum
file (../shared/data/real/{boss,sdss1,desi,lamost}) and of a parametric simulated set (seed 11, 300
spectra: regenerated from its seed by tests/test_pins.py, never stored). Made on 2026-11-29 from commit
815a945 (before the family plug-ins), and kept: tests/test_pins.py compares today's catalogs with them.
The simulated set's pins were made again (``--sim-only``) when the simulator changed on purpose (issue 18:
telluric bands, stellar variety; the sky continuum and the survey depths), the model code unchanged.
"""

import sys
import tempfile
from pathlib import Path

from redsift.models import load_model
from redsift.predict import predict_catalog
from redsift.simulate import simulate

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
MODELS = ("quasarnet-boss-sim", "quasarnet-qn6_100f-quasarnp")


def real_files():
    pats = ("boss/spec-*.fits", "sdss1/spec-*.fits", "desi/coadd-*.fits", "lamost/spec-*.fits.gz")
    return [str(p) for pat in pats for p in sorted(REAL.glob(pat))]


def main(out=REPO / "tests" / "data" / "pins", sim_only=False):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sim = Path(tmp) / "sim"
        simulate(300, "boss", sim, seed=11, block=300, progress=False)
        for name in MODELS:
            model = load_model(name)
            if not sim_only:
                predict_catalog(model, real_files(), progress=False).write(out / f"{name}-real.fits", overwrite=True)
            predict_catalog(model, [str(sim)], progress=False).write(out / f"{name}-sim.fits", overwrite=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--sim-only"]
    main(*args, sim_only="--sim-only" in sys.argv[1:])
