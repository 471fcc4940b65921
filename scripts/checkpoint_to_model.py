"""Write a training checkpoint's weights as a model directory (model.safetensors + config.json).

    python scripts/checkpoint_to_model.py RUN_OR_CHECKPOINT_DIR OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch

from redsift.models import create_model, save_model

src, out = Path(sys.argv[1]), Path(sys.argv[2])
ck = torch.load(src / "checkpoint.pt", weights_only=True, map_location="cpu")
model = create_model("quasarnet", json.loads(ck["model_config_json"]))
model.load_state_dict(ck["model"])
save_model(model, out, {"description": f"weights of {src}/checkpoint.pt (epoch {ck['epoch']}, "
                                       f"step {ck['global_step']})", "epoch": int(ck["epoch"])})
print(f"wrote {out}")
