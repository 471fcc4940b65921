"""Compiled CPU kernels of the eigen family's chi-square scan (numba, optional: ``pip install redsift[fast]``).

The native stage of the scan (:func:`redsift.models.eigen._native`) needs, for each spectrum and each of
``S`` consecutive shifts of its class's templates, the sums

    b_a = sum_n (w f)_n T_a(n + o),   M_ab = sum_n w_n T_a(n + o) T_b(n + o),
    F = sum_n (w f^2)_n V(n + o),     N = sum_n [w_n > 0] V(n + o),

(``T`` the eigenspectra times their validity ``V``; ``o`` the rest-grid offset of the shift). In torch they
are batched matrix products of the data's Hankel rows with a stacked copy of every spectrum's template
window: ~1 MB of Hankel rows and ~0.4 MB of template window per spectrum, written and read again, and this
machine streams memory at 0.5-2 GB/s (``docs/eigen.md``, "Speed"). Here one spectrum at a time, its data
(4 x npix) and its class's templates stay in the core's cache while every shift's sums are taken, the
products of two templates formed on the fly, all in float64: 0.17 ms per spectrum for 7 shifts on one
core of the 2-core VM (K = 5), against 1.2 ms (float32) and 2.0 ms (float64) for the batched products with
their Hankel rows, and equal to numpy's float64 sums to 1e-10 (``tests/test_eigen.py``). No library computes
these sums without the copies, which is why this one is written by hand.

Without numba, or with ``REDSIFT_NO_NUMBA=1``, :data:`AVAILABLE` is False and the torch path runs (it also
runs on a GPU).
"""

from __future__ import annotations

import numpy as np

from ..kernels import AVAILABLE, njit

__all__ = ["AVAILABLE", "window_sums"]


def _source(K: int, group: int = 9) -> str:
    """The kernel's source for ``K`` eigenspectra: one pass over the pixels for ``b``, ``F`` and ``N`` and one
    per group of ``group`` template pairs for ``M``, every sum in its own local variable (written out, so
    that the compiler keeps them in vector registers: 2x faster than loops over ``a, b`` with one sum
    each, measured on the 2-core VM: 0.17 against 0.31 ms per spectrum for K = 5 and 7 shifts)."""
    pairs = [(a, c) for a in range(K) for c in range(a, K)]
    L = [*_head("D, T, V, krow, olo, S, out", "D.shape[2]"),
         "        k = krow[b]",
         "        wf = D[b, 0]",
         "        w = D[b, 1]",
         "        wf2 = D[b, 2]",
         "        g = D[b, 3]",
         "        for t in range(S):",
         "            base = olo[b] + S - 1 - t",  # t = 0: the window's lowest shift (largest rest offset)
         *[f"            T{a} = T[k, {a}, base:base + npix]" for a in range(K)],
         "            Vk = V[k, base:base + npix]",
         *[f"            b{a} = 0.0" for a in range(K)],
         "            aF = 0.0",
         "            aN = 0.0",
         "            for n in range(npix):",
         "                x = wf[n]",
         *[f"                b{a} += x * T{a}[n]" for a in range(K)],
         "                aF += wf2[n] * Vk[n]",
         "                aN += g[n] * Vk[n]",
         *[f"            out[b, {a}, t] = b{a}" for a in range(K)],
         f"            out[b, {K + len(pairs)}, t] = aF",
         f"            out[b, {K + len(pairs) + 1}, t] = aN"]
    L += _pair_passes(pairs, group, " " * 12, "x = w[n]", lambda i: f"out[b, {K + i}, t]")
    return "\n".join(L) + "\n"


def _head(args: str, npix: str) -> list[str]:
    """A kernel's first lines: its signature and the loop over the batch's rows (``b``; the first argument's)."""
    first = args.split(",")[0]
    return [f"def kern({args}):", f"    B = {first}.shape[0]", f"    npix = {npix}", "    for b in range(B):"]


def _pair_passes(pairs, group: int, indent: str, weight: str, target) -> list[str]:
    """Source lines summing ``x T_a T_c`` over the pixels for every template pair, in passes of at most
    ``group`` sums (``weight``: the line that sets ``x`` for pixel ``n``; ``target(i)``: where pair ``i``'s sum
    is stored)."""
    L = []
    for g0 in range(0, len(pairs), group):
        grp = pairs[g0:g0 + group]
        L += [f"{indent}m{a}_{c} = 0.0" for a, c in grp]
        L += [f"{indent}for n in range(npix):", f"{indent}    {weight}"]
        L += [f"{indent}    y{a} = x * T{a}[n]" for a in sorted({a for a, _ in grp})]
        L += [f"{indent}    m{a}_{c} += y{a} * T{c}[n]" for a, c in grp]
        L += [f"{indent}{target(pairs.index((a, c)))} = m{a}_{c}" for a, c in grp]
    return L


_KERNELS: dict = {}


def _kernel(K: int):
    """The compiled kernel for ``K`` eigenspectra (compiled once per process: ~1 s)."""
    if K not in _KERNELS:
        ns: dict = {}
        exec(compile(_source(K), f"<redsift eigen kernel K={K}>", "exec"), ns)  # noqa: S102 - our own source
        _KERNELS[K] = njit(fastmath=True, boundscheck=False, nogil=True)(ns["kern"])
    return _KERNELS[K]


def window_sums(D: np.ndarray, T: np.ndarray, V: np.ndarray, krow: np.ndarray, olo: np.ndarray, S: int) -> np.ndarray:
    """The native stage's sums ``(B, K + K(K+1)/2 + 2, S)`` in increasing shift order (the layout of
    :func:`redsift.models.eigen._solve_curve`: ``b``, packed ``M``, ``F``, ``N``).

    Parameters
    ----------
    D : (B, 4, npix) float64
        ``w f``, ``w``, ``w f^2`` and ``[w > 0]`` of each spectrum (every product is taken in float64).
    T : (nclass, K, R) float32
        Every class's eigenspectra on the rest grid, times their validity.
    V : (nclass, R) float32
        The validity (1 where a rest pixel is modelled).
    krow, olo : (B,) int64
        Each spectrum's class and the rest-grid offset of its window's *largest* shift (the lowest
        offset); the window spans offsets ``olo .. olo + S - 1``, which must lie inside ``R - npix``.
    """
    B, K = D.shape[0], T.shape[1]
    out = np.zeros((B, K + K * (K + 1) // 2 + 2, S))
    if B:
        if int(np.min(olo)) < 0 or int(np.max(olo)) + S - 1 + D.shape[2] > T.shape[2]:
            raise ValueError("a window reaches beyond the rest grid")
        _kernel(K)(np.ascontiguousarray(D, np.float64), T, V, np.ascontiguousarray(krow, np.int64),
              np.ascontiguousarray(olo, np.int64), int(S), out)
    return out


def _joint_source(K: int, group: int = 9) -> str:
    """The joint fit's kernel for ``K`` eigenspectra per solution: the sums of the weighted least squares of
    the best solution's ``K`` templates and the second's ``K`` together (``T0 .. T{2K-1}``), with the weights
    of the best solution's coverage: ``b`` (2K), packed ``M`` and ``F = sum w f^2``, in passes of at most
    ``group`` sums (as :func:`_source`)."""
    J = 2 * K
    pairs = [(a, c) for a in range(J) for c in range(a, J)]
    L = [*_head("flux, ivar, T, V, k1, o1, k2, o2, out", "flux.shape[1]"),
         "        if k2[b] < 0:",
         "            continue",
         "        f = flux[b]",
         "        iv = ivar[b]",
         "        V1 = V[k1[b], o1[b]:o1[b] + npix]",
         *[f"        T{a} = T[k1[b], {a}, o1[b]:o1[b] + npix]" for a in range(K)],
         *[f"        T{K + a} = T[k2[b], {a}, o2[b]:o2[b] + npix]" for a in range(K)],
         *[f"        b{a} = 0.0" for a in range(J)],
         "        aF = 0.0",
         "        for n in range(npix):",
         "            w = np.float64(iv[n]) if V1[n] > 0 else 0.0",
         "            x = w * np.float64(f[n])",
         *[f"            b{a} += x * T{a}[n]" for a in range(J)],
         "            aF += x * np.float64(f[n])",
         *[f"        out[b, {a}] = b{a}" for a in range(J)],
         f"        out[b, {J + len(pairs)}] = aF"]
    L += _pair_passes(pairs, group, " " * 8, "x = np.float64(iv[n]) if V1[n] > 0 else 0.0", lambda i: f"out[b, {J + i}]")
    return "\n".join(L) + "\n"


def _joint_kernel(K: int):
    key = ("joint", K)
    if key not in _KERNELS:
        ns: dict = {"np": np}
        exec(compile(_joint_source(K), f"<redsift eigen joint kernel K={K}>", "exec"), ns)  # noqa: S102 - our own source
        _KERNELS[key] = njit(fastmath=True, boundscheck=False, nogil=True)(ns["kern"])
    return _KERNELS[key]


def joint_sums(flux, ivar, T, V, k1, o1, k2, o2) -> np.ndarray:
    """The sums of the joint fit of two solutions (:func:`redsift.models.eigen._final`'s two objects in one
    fibre) ``(B, 2K + 2K(2K+1)/2 + 1)``: ``b``, packed ``M`` (pairs ``a <= c`` in row order) and ``F``, with
    the weights ``ivar`` on the first solution's coverage; rows with ``k2 < 0`` are left zero. ``o1``, ``o2``:
    the rest-grid offsets of the two windows (``s_max - shift``)."""
    B, K = flux.shape[0], T.shape[1]
    J = 2 * K
    out = np.zeros((B, J + J * (J + 1) // 2 + 1))
    if B:
        npix = flux.shape[1]
        for o in (o1, o2):
            if int(np.min(o)) < 0 or int(np.max(o)) + npix > T.shape[2]:
                raise ValueError("a window reaches beyond the rest grid")
        _joint_kernel(K)(np.ascontiguousarray(flux, np.float32), np.ascontiguousarray(ivar, np.float32), T, V,
                         *(np.ascontiguousarray(x, np.int64) for x in (k1, o1, k2, o2)), out)
    return out
