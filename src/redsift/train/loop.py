"""One training loop for every trainable family: ``redsift train FAMILY``.

The loop knows nothing of a family but its adapter (:class:`redsift.models.family.Family`): labels,
batches, optimizers (a list), the training step, the validation step and metrics. The data order is a
pure function of ``(seed, epoch)``; the checkpoint holds the model, every optimizer's state, the RNG
states, the position in the epoch and the history, so that ``k`` steps, a stop and a resume to ``N``
steps give exactly the weights of ``N`` uninterrupted steps. Checkpoints are plain state dicts loaded
with ``torch.load(weights_only=True)``; the best model (lowest validation loss) is saved as
``RUN_DIR/best/{model.safetensors, config.json}``; the next batch is read in a background thread while
the model trains on this one; early stopping after ``patience`` epochs without improvement.

``init`` starts from the weights of a model directory (fine-tuning); the family says which config
fields must agree (:meth:`~redsift.models.family.Family.init_compatible`). ``lr_schedule="cosine"``
anneals the learning rate from ``lr`` to ``lr_min`` over ``epochs`` (after a linear warm-up of
``warmup_steps``, when set: a heteroscedastic head can run away in its first steps at the full rate);
the rate is a pure function of the global step, so resuming stays exact. Families solved rather than
trained (a ``fit`` hook) are fitted once and saved the same way.

**torchrun** (``torchrun --nproc_per_node N -m redsift train FAMILY ...``; ``gloo`` on CPUs, ``nccl`` on
GPUs): every rank builds the same model (same seed; rank 0's weights are broadcast), takes its share of
each global batch (``batch_size`` is the global batch: ranks split it), and the gradients are averaged
across ranks as they are accumulated, before any clipping or step, so N processes take the steps one
process would take on the same global batch (exactly so for models without batch statistics or
augmentation: batch norm normalises each rank's share, and each rank draws its own augmentation). Only
rank 0 logs, validates, writes checkpoints and the best model; all ranks resume from the same checkpoint.
At the end the ranks' weights are compared (``ddp.json``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.splits import split
from ..data.store import Dataset
from ..errors import RedsiftError
from ..models import create_model, get_family, load_model, save_model
from ..zwarning import ZWarningMask

__all__ = ["TrainConfig", "train", "validate", "learning_rate", "load_train_config"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved as RUN_DIR/train_config.json)."""

    data: str
    out: str
    family: str = "quasarnet"
    val: str | None = None
    val_fraction: float = 0.05  # used when no --val: an object-level split of --data
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant" or "cosine" (from lr to lr_min over `epochs`)
    lr_min: float = 1e-5
    warmup_steps: int = 0  # the rate rises linearly from lr / warmup_steps over the first steps (either schedule)
    init: str | None = None  # start from this model directory's weights (same architecture)
    amsgrad: bool = True
    seed: int = 0
    patience: int = 5  # early stopping on the validation loss
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    checkpoint_every: int = 500  # steps; a checkpoint is also written at every epoch end
    val_max: int = 20000  # validation spectra evaluated per epoch
    memory_gb: float = 6.0  # training sets up to this size are read into memory first (random rows are slow)
    threads: int | None = None
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    model: dict = field(default_factory=dict)  # overrides of the family's config

    def __post_init__(self):
        if self.warmup_steps < 0:
            raise RedsiftError(f"warmup_steps {self.warmup_steps}: must be 0 (none) or more")
        if self.lr_schedule not in ("constant", "cosine"):
            raise RedsiftError(f"unknown lr_schedule {self.lr_schedule!r} (constant, cosine)")


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def _distributed() -> tuple[int, int]:
    """``(rank, world size)`` under torchrun (the process group initialised once); ``(0, 1)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _average_gradients(model, world: int):
    """Average each parameter's gradient over the ranks as soon as it is accumulated (so the family's own
    training step, clipping included, sees the global batch's gradient)."""
    import torch.distributed as dist

    def hook(p):
        dist.all_reduce(p.grad)
        p.grad.div_(world)

    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(hook)


def _share(idx, rank: int, world: int):
    """Rank ``rank``'s part of a global batch (contiguous, as equal as the batch allows)."""
    return np.array_split(np.asarray(idx), world)[rank] if world > 1 else idx


def _subset(labels: dict, idx) -> dict:
    return {k: v[idx] for k, v in labels.items()}


def _batch(fam, model, ds, idx, labels, rng=None):
    """A batch's tensors; with ``rng`` (training batches only) the family's ``augment`` hook runs first."""
    flux, ivar, _ = ds.read(idx)
    lab = _subset(labels, idx)
    if rng is not None and fam.augment is not None:
        out = fam.augment(model, flux, ivar, lab, rng)
        flux, ivar = out[:2]
        if len(out) > 2:  # a family may draw per-batch labels too (zrefine: the priors)
            lab = out[2]
    return fam.batch(model, flux, ivar, lab)


@torch.inference_mode()
def validate(model, ds, idx, labels, batch_size: int = 1024) -> dict:
    """Loss and the family's metrics of ``model`` on rows ``idx`` of dataset ``ds``."""
    fam = get_family(model)
    model.eval()
    dev = next(iter([*model.parameters(), *model.buffers()])).device  # solved families hold only buffers
    raws, loss = [], 0.0
    for s in range(0, len(idx), batch_size):
        b = idx[s:s + batch_size]
        X, t = _batch(fam, model, ds, b, labels)
        lval, raw = fam.eval_step(model, X.to(dev), [x.to(dev) for x in t])
        loss += lval * len(b)
        raws.append(raw)
    m = fam.metrics(model, np.concatenate(raws) if raws else np.zeros(0), _subset(labels, idx))
    m["loss"] = loss / max(len(idx), 1)
    return m


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate at global ``step`` (0-based) under ``cfg.lr_schedule``."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "constant":
        return cfg.lr * warm
    frac = min(step / max(cfg.epochs * steps_per_epoch, 1), 1.0)  # cosine (TrainConfig checks the name)
    return warm * (cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * frac)))


def _init_weights(model, path: str):
    """Copy the weights of model directory ``path`` into ``model`` (the family says what must agree)."""
    src = load_model(path)
    diff = get_family(model).init_compatible(src, model) if src.family == model.family else []
    if src.family != model.family or diff:
        raise RedsiftError(f"{path}: cannot initialise from this model ({src.family}; differs in "
                           f"{', '.join(diff) or 'family'})")
    model.load_state_dict(src.state_dict())


def _save_checkpoint(path: Path, state: dict):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _usable(meta) -> np.ndarray:
    """Rows with data (NODATA rows never train)."""
    if "ZWARN" not in meta.colnames:
        return np.arange(len(meta))
    return np.flatnonzero((np.asarray(meta["ZWARN"], np.int64) & int(ZWarningMask.NODATA)) == 0)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> list:
    """Train (or resume) a run of family ``cfg.family``; returns the history (one dict per epoch)."""
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    if out.exists() and (out / "train_config.json").exists() and not resume:
        raise RedsiftError(f"{out}: a run exists there (use --resume to continue it)")
    if resume and not ckpt_path.exists():
        raise RedsiftError(f"{ckpt_path}: no checkpoint to resume from")
    rank, world = _distributed()
    lead = rank == 0
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank has checked the run directory before rank 0 writes into it
        if cfg.batch_size % world:
            raise RedsiftError(f"batch_size {cfg.batch_size} (the global batch) must divide among {world} ranks")
        progress = progress and lead
        if not lead:
            logging.getLogger("redsift").setLevel(logging.WARNING)
    fam = get_family(cfg.family)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    ds = Dataset(cfg.data)
    if ds.nbytes <= cfg.memory_gb * 2**30:
        ds.load()
    meta = ds.meta
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.family, **cfg.model)  # first: its config may decide the labels (a taxonomy)
    labels = fam.labels(meta, model)
    usable = _usable(meta)
    if cfg.val:
        vds = Dataset(cfg.val)
        vlabels = fam.labels(vds.meta, model)
        train_idx = usable
        val_idx = np.arange(len(vds))
    else:
        sides = split(meta, (1 - cfg.val_fraction, cfg.val_fraction), ("train", "val"), seed=cfg.seed)
        train_idx = np.intersect1d(sides["train"], usable)
        val_idx = np.intersect1d(sides["val"], usable)
        vds, vlabels = ds, labels
    if len(val_idx) > cfg.val_max:
        val_idx = np.sort(np.random.default_rng(cfg.seed).choice(val_idx, cfg.val_max, replace=False))

    if fam.grid(model) != ds.grid:
        raise RedsiftError(f"{cfg.data}: dataset grid ({ds.grid.describe()}) differs from the model's "
                           f"({fam.grid(model).describe()})")
    if cfg.init and not resume:
        _init_weights(model, cfg.init)
        log.info("initialised from %s", cfg.init)
    description = f"{fam.description}, trained by redsift"
    if fam.fit is not None and not lead:  # solved once, by rank 0
        return []
    if fam.fit is not None:  # solved, not trained by gradient descent
        history = [dict(fam.fit(model, ds, train_idx, labels, cfg) or {})]
        history[0].update(validate(model, vds, val_idx, vlabels) if len(val_idx) else {})
        (out / "train_config.json").write_text(json.dumps({"train": dataclasses.asdict(cfg)}, indent=1, default=str))
        save_model(model, out / "best", {"description": description, "train": dataclasses.asdict(cfg),
                                         "val_metrics": history[0]})
        (out / "history.json").write_text(json.dumps(history, indent=1))
        return history
    dev = _device(cfg.device)
    model.to(dev)
    if world > 1:
        import torch.distributed as dist

        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, 0)
        _average_gradients(model, world)
    opts = fam.configure_optimizers(model, cfg)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_loss": float("inf"), "bad_epochs": 0,
             "history": []}
    if resume:
        ck = torch.load(ckpt_path, weights_only=True, map_location=dev)
        model.load_state_dict(ck["model"])
        # checkpoints written before the family plug-ins hold one optimizer under "optimizer"
        opt_states = ck["optimizers"] if "optimizers" in ck else [ck["optimizer"]]
        if len(opt_states) != len(opts):
            raise RedsiftError(f"{ckpt_path}: {len(opt_states)} optimizer states for {len(opts)} optimizers")
        for opt, st in zip(opts, opt_states):
            opt.load_state_dict(st)
        torch.set_rng_state(ck["torch_rng"].cpu())
        if dev.type == "cuda" and "cuda_rng" in ck:
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu(), dev)
        state = {k: ck[k] for k in state if k != "history"} | {"history": json.loads(ck["history_json"])}
        log.info("resumed %s at epoch %d step %d", out, state["epoch"], state["step_in_epoch"])
    elif lead:
        (out / "train_config.json").write_text(json.dumps(
            {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model.config),
             "data_provenance": ds.provenance, "n_train": int(len(train_idx)), "n_val": int(len(val_idx))},
            indent=1, default=str))

    def checkpoint():
        if not lead:
            return
        _save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizers": [o.state_dict() for o in opts],
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {}),
            "epoch": state["epoch"], "step_in_epoch": state["step_in_epoch"], "global_step": state["global_step"],
            "best_loss": state["best_loss"], "bad_epochs": state["bad_epochs"],
            "history_json": json.dumps(state["history"]),
            "model_config_json": json.dumps(dataclasses.asdict(model.config)),
        })

    steps_per_epoch = int(np.ceil(len(train_idx) / cfg.batch_size))
    stop = False
    from concurrent.futures import ThreadPoolExecutor

    while state["epoch"] < cfg.epochs and not stop:
        e = state["epoch"]
        order = np.random.default_rng([cfg.seed, e]).permutation(train_idx)
        bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"], desc=f"epoch {e + 1}/{cfg.epochs}",
                   unit="batch", disable=not progress)
        t0, seen = time.perf_counter(), 0
        model.train()
        running, nrun = 0.0, 0

        def fetch(step):  # the next batch is read and prepared in a background thread
            # augmentation draws from a generator seeded by (seed, epoch, step): a resumed run sees the same
            return _batch(fam, model, ds, _share(order[step * cfg.batch_size:(step + 1) * cfg.batch_size], rank, world),
                          labels, np.random.default_rng([cfg.seed, e, step, 1, rank]))

        pool = ThreadPoolExecutor(1)
        pending = pool.submit(fetch, state["step_in_epoch"]) if state["step_in_epoch"] < steps_per_epoch else None
        for s in range(state["step_in_epoch"], steps_per_epoch):
            X, t = pending.result()
            X, t = X.to(dev, non_blocking=True), [x.to(dev, non_blocking=True) for x in t]
            pending = pool.submit(fetch, s + 1) if s + 1 < steps_per_epoch else None
            for opt in opts:
                for group in opt.param_groups:
                    group["lr"] = learning_rate(cfg, state["global_step"], steps_per_epoch)
            step_loss = fam.training_step(model, X, t, opts)
            if world > 1:  # the global batch's loss: the mean of the ranks' (equal shares)
                import torch.distributed as dist

                lt = torch.tensor([step_loss], dtype=torch.float64, device=dev)
                dist.all_reduce(lt)
                step_loss = float(lt) / world
            running += step_loss
            nrun += 1
            seen += len(X)
            state["step_in_epoch"] = s + 1
            state["global_step"] += 1
            bar.update()
            bar.set_postfix(loss=f"{running / nrun:.3f}")
            if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                stop = True
                break
            if cfg.checkpoint_every and state["global_step"] % cfg.checkpoint_every == 0:
                checkpoint()
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
        rate = seen / max(time.perf_counter() - t0, 1e-9)
        if stop and state["step_in_epoch"] < steps_per_epoch:
            checkpoint()
            break
        # end of epoch: validate, keep the best, early-stop (rank 0 decides; the others follow)
        if not lead:
            state["epoch"], state["step_in_epoch"] = e + 1, 0
            if _broadcast_flag(False, world):
                break
            continue
        metrics = validate(model, vds, val_idx, vlabels)
        metrics.update({"epoch": e + 1, "train_loss": running / max(nrun, 1),
                        "train_spectra_per_s": rate, "global_step": state["global_step"]})
        state["history"].append(metrics)
        log.info("epoch %d: %s", e + 1, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
        if progress:
            print(f"epoch {e + 1}: {fam.summary_line(metrics)}  ({rate:.0f} spectra/s)")
        if metrics["loss"] < state["best_loss"]:
            state["best_loss"], state["bad_epochs"] = metrics["loss"], 0
            save_model(model, out / "best", {"description": description, "train": dataclasses.asdict(cfg),
                                             "epoch": e + 1, "val_metrics": metrics})
        else:
            state["bad_epochs"] += 1
        state["epoch"], state["step_in_epoch"] = e + 1, 0
        checkpoint()
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))
        if _broadcast_flag(state["bad_epochs"] >= cfg.patience, world):
            log.info("early stopping after %d epochs without improvement", cfg.patience)
            break
    if world > 1:
        _check_ranks(model, out, lead, world)
    return state["history"]


def _broadcast_flag(flag: bool, world: int) -> bool:
    """Rank 0's decision, on every rank."""
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.broadcast(t, 0)
    return bool(t.item())


def _check_ranks(model, out: Path, lead: bool, world: int):
    """Whether every rank ends with rank 0's weights (``out/ddp.json``)."""
    import torch.distributed as dist

    with torch.no_grad():
        v = torch.cat([p.detach().double().flatten().cpu() for p in model.parameters()])
    mine = torch.tensor([float(v.sum()), float((v * v).sum())], dtype=torch.float64)
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    agree = bool(torch.all((hi - lo).abs() <= 1e-9 * (1 + mine.abs())))
    if lead:
        (out / "ddp.json").write_text(json.dumps({"world_size": world, "ranks_agree": agree,
                                                  "weights_sum": float(mine[0])}, indent=1))
    dist.barrier()


def load_train_config(path) -> TrainConfig:
    """The TrainConfig of a run directory's ``train_config.json`` (runs before the family plug-ins were
    all QuasarNET: ``family`` defaults to it)."""
    d = json.loads(Path(path).read_text())["train"]
    return TrainConfig(**d)
