"""Taxonomies: the classes a classifier learns, as files, and the labels of a dataset in them.

A taxonomy is a JSON file (built-ins in ``redsift/taxonomies/``: ``boss14`` the default, ``boss12``,
``gasnet13``, ``lamost``; or any path)::

    {"name": "boss14", "description": "...",
     "classes": [{"name": "QSO", "spectype": "QSO", "match": {"CLASS": ["QSO"], "BAL_FLAG": [0, -1]}},
                 {"name": "K", "spectype": "STAR", "match": {"CLASS": ["STAR"], "SUBCLASS": ["K"]}}, ...],
     "ignore": [{"CLASS": ["GALAXY"]}]}

A row of a dataset belongs to a class when every key of the class's ``match`` holds: the row's value is
in the list (a value ending in ``*`` matches by prefix, so ``"K*"`` takes SDSS's ``K5`` and ``K7``), or,
for ``Z``, lies in ``[lo, hi)``. Rows matching an ``ignore`` rule are left out of training and of
per-class evaluation (e.g. galaxies for a purely stellar taxonomy). Every other row must match exactly
one class: a taxonomy naming unknown keys, spectral types or labels, or a dataset with rows that match
none or several classes, fails before training starts with a message listing the mismatch.

``spectype`` (STAR, GALAXY or QSO) gives every taxonomy the coarse view Redrock and DESI catalogs use:
``PROB_STAR`` is the sum of the probabilities of the STAR classes, and so on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import RedsiftError

__all__ = ["Taxonomy", "load_taxonomy", "TaxonomyError", "SPECTYPES", "BUILTIN_DIR"]

BUILTIN_DIR = Path(__file__).parent / "taxonomies"
SPECTYPES = ("STAR", "GALAXY", "QSO")
#: The label columns a taxonomy may match on, and the values the simulator and the catalog readers give.
KNOWN_VALUES = {
    "CLASS": {"QSO", "STAR", "GALAXY"},
    "SUBCLASS": {"O", "B", "A", "F", "G", "K", "M", "L", "T", "WD", "C", "CV", "PASSIVE", "STARFORMING",
                 "BROADLINE", "BAL", "LOWZ", ""},
    "BAL_FLAG": {-1, 0, 1},
    "Z": None,  # a [lo, hi) range
}


class TaxonomyError(RedsiftError):
    """A taxonomy file that is not valid, or labels that do not fit it."""


@dataclass(frozen=True)
class Taxonomy:
    """Classes (names, spectral types, match rules) and ignore rules; see the module docstring."""

    name: str
    classes: tuple
    spectypes: tuple
    rules: tuple
    ignore: tuple = ()
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict, source: str = "taxonomy") -> "Taxonomy":
        problems = []
        if not isinstance(d, dict) or not isinstance(d.get("classes"), list) or not d["classes"]:
            raise TaxonomyError(f"{source}: a taxonomy needs a non-empty list 'classes'")
        names, types, rules = [], [], []
        for k, c in enumerate(d["classes"]):
            name = str(c.get("name", ""))
            if not name:
                problems.append(f"class {k} has no name")
            st = str(c.get("spectype", ""))
            if st not in SPECTYPES:
                problems.append(f"class {name!r}: spectype {st!r} is not one of {', '.join(SPECTYPES)}")
            match = c.get("match") or {}
            if not match:
                problems.append(f"class {name!r} has no match rule")
            problems += _check_rule(match, f"class {name!r}")
            names.append(name)
            types.append(st)
            rules.append(match)
        for k, rule in enumerate(d.get("ignore", [])):
            problems += _check_rule(rule, f"ignore rule {k}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"duplicated class names {', '.join(dup)}")
        if problems:
            raise TaxonomyError(f"{source}: " + "; ".join(problems))
        return cls(str(d.get("name", source)), tuple(names), tuple(types), tuple(rules), tuple(d.get("ignore", [])),
                   str(d.get("description", "")))

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "classes": [{"name": n, "spectype": t, "match": r} for n, t, r in zip(self.classes, self.spectypes, self.rules)],
                "ignore": list(self.ignore)}

    def __len__(self) -> int:
        return len(self.classes)

    def spectype_index(self) -> np.ndarray:
        """(n_class,) index into :data:`SPECTYPES` of each class."""
        return np.array([SPECTYPES.index(t) for t in self.spectypes], np.int64)

    def spectype_probs(self, probs: np.ndarray) -> np.ndarray:
        """(n, 3) probabilities of STAR, GALAXY, QSO from (n, n_class) class probabilities."""
        probs = np.asarray(probs, float)
        out = np.zeros((len(probs), len(SPECTYPES)))
        for k, s in enumerate(self.spectype_index()):
            out[:, s] += probs[:, k]
        return out

    def labels(self, meta, source: str = "dataset", strict: bool = True) -> np.ndarray:
        """Class index of every row of ``meta`` (an astropy Table or dict of columns); -1 for ignored rows.

        ``strict``: a row matching no class (and no ignore rule) or several classes raises
        :class:`TaxonomyError` listing the labels concerned; otherwise such rows get -2 (unlabelled)."""
        n = len(meta[next(iter(meta.keys()))]) if isinstance(meta, dict) else len(meta)
        hits = np.zeros((n, len(self.classes)), bool)
        for k, rule in enumerate(self.rules):
            hits[:, k] = _matches(meta, rule, n, source)
        ignored = np.zeros(n, bool)
        for rule in self.ignore:
            ignored |= _matches(meta, rule, n, source)
        count = hits.sum(axis=1)
        out = np.where(count == 1, hits.argmax(axis=1), -2)
        out[ignored] = -1
        bad_none = (count == 0) & ~ignored
        bad_many = (count > 1) & ~ignored
        if strict and (bad_none.any() or bad_many.any()):
            msg = []
            if bad_none.any():
                msg.append(f"{int(bad_none.sum())} rows match no class of taxonomy {self.name!r} ("
                           + _describe(meta, bad_none) + ")")
            if bad_many.any():
                cls = sorted({"/".join(np.array(self.classes)[hits[i]]) for i in np.flatnonzero(bad_many)[:50]})
                msg.append(f"{int(bad_many.sum())} rows match several classes ({', '.join(cls)}; "
                           + _describe(meta, bad_many) + ")")
            raise TaxonomyError(f"{source}: " + "; ".join(msg))
        return out


def _check_rule(rule: dict, what: str) -> list[str]:
    problems = []
    if not isinstance(rule, dict):
        return [f"{what}: a rule is a mapping of column -> values"]
    for key, values in rule.items():
        if key not in KNOWN_VALUES:
            problems.append(f"{what}: unknown label column {key!r} (known: {', '.join(KNOWN_VALUES)})")
            continue
        if key == "Z":
            if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)):
                problems.append(f"{what}: Z takes a range [lo, hi], not {values!r}")
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"{what}: {key} takes a non-empty list of values")
            continue
        known = KNOWN_VALUES[key]
        unknown = [v for v in values if not (isinstance(v, str) and v.endswith("*")) and v not in known]
        if unknown:
            problems.append(f"{what}: unknown {key} value(s) {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(repr(v) for v in sorted(known, key=str))})")
    return problems


def _column(meta, key, source):
    if key not in (meta.keys() if isinstance(meta, dict) else meta.colnames):
        raise TaxonomyError(f"{source}: the taxonomy matches on {key}, which the data has no column for")
    return np.asarray(meta[key])


def _matches(meta, rule: dict, n: int, source: str) -> np.ndarray:
    ok = np.ones(n, bool)
    for key, values in rule.items():
        col = _column(meta, key, source)
        if key == "Z":
            z = col.astype(float)
            ok &= (z >= values[0]) & (z < values[1])
        elif key == "BAL_FLAG":
            ok &= np.isin(col.astype(np.int64), np.asarray(values, np.int64))
        else:
            s = np.char.strip(col.astype(str))
            m = np.isin(s, [v for v in values if not v.endswith("*")])
            for v in values:
                if v.endswith("*"):
                    m |= np.char.startswith(s, v[:-1])
            ok &= m
    return ok


def _describe(meta, rows, limit: int = 8) -> str:
    cols = [c for c in ("CLASS", "SUBCLASS") if c in (meta.keys() if isinstance(meta, dict) else meta.colnames)]
    keys = [" ".join(str(np.asarray(meta[c])[i]).strip() or "''" for c in cols) for i in np.flatnonzero(rows)]
    uniq, counts = np.unique(keys, return_counts=True)
    order = np.argsort(-counts)
    parts = [f"{uniq[i]} x{counts[i]}" for i in order[:limit]]
    if len(uniq) > limit:
        parts.append(f"... {len(uniq) - limit} more")
    return ", ".join(parts)


def load_taxonomy(name_or_path) -> Taxonomy:
    """A built-in taxonomy by name (``boss14``, ``boss12``, ``gasnet13``, ``lamost``), a JSON file, or a dict."""
    if isinstance(name_or_path, Taxonomy):
        return name_or_path
    if isinstance(name_or_path, dict):
        return Taxonomy.from_dict(name_or_path)
    p = Path(str(name_or_path))
    if not p.is_file():
        q = BUILTIN_DIR / f"{name_or_path}.json"
        if not q.is_file():
            known = ", ".join(sorted(f.stem for f in BUILTIN_DIR.glob("*.json")))
            raise TaxonomyError(f"{name_or_path}: no such taxonomy file or built-in taxonomy (built-in: {known})")
        p = q
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise TaxonomyError(f"{p}: not a readable taxonomy ({exc})") from None
    return Taxonomy.from_dict(d, str(p))
