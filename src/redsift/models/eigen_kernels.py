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

__all__ = ["AVAILABLE", "window_sums", "joint_sums", "residual_stats"]


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
         "                x = np.float64(wf[n])",
         *[f"                b{a} += x * T{a}[n]" for a in range(K)],
         "                aF += np.float64(wf2[n]) * Vk[n]",
         "                aN += np.float64(g[n]) * Vk[n]",
         *[f"            out[b, {a}, t] = b{a}" for a in range(K)],
         f"            out[b, {K + len(pairs)}, t] = aF",
         f"            out[b, {K + len(pairs) + 1}, t] = aN"]
    L += _pair_passes(pairs, group, " " * 12, "x = np.float64(w[n])", lambda i: f"out[b, {K + i}, t]")
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
        ns: dict = {"np": np}
        exec(compile(_source(K), f"<redsift eigen kernel K={K}>", "exec"), ns)  # noqa: S102 - our own source
        _KERNELS[K] = njit(fastmath=True, boundscheck=False, nogil=True)(ns["kern"])
    return _KERNELS[K]


def window_sums(D: np.ndarray, T: np.ndarray, V: np.ndarray, krow: np.ndarray, olo: np.ndarray, S: int) -> np.ndarray:
    """The native stage's sums ``(B, K + K(K+1)/2 + 2, S)`` in increasing shift order (the layout of
    :func:`redsift.models.eigen._solve_curve`: ``b``, packed ``M``, ``F``, ``N``).

    Parameters
    ----------
    D : (B, 4, npix) float32 or float64
        ``w f``, ``w``, ``w f^2`` and ``[w > 0]`` of each spectrum (every product is taken in float64; float32
        data are widened as they are read: the same sums as from a float64 copy, without writing one).
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
        D = np.ascontiguousarray(D, np.float32 if D.dtype == np.float32 else np.float64)
        _kernel(K)(D, T, V, np.ascontiguousarray(krow, np.int64), np.ascontiguousarray(olo, np.int64), int(S), out)
    return out


def _joint_source(K: int, group: int = 9, two: bool = True) -> str:
    """The joint fit's kernel for ``K`` eigenspectra per solution: the sums of the weighted least squares of
    the best solution's ``K`` templates and the second's ``K`` together (``T0 .. T{2K-1}``), with the weights
    of the best solution's coverage: ``b`` (2K), packed ``M`` and ``F = sum w f^2``, in passes of at most
    ``group`` sums (as :func:`_source`). ``two=False``: the best solution's ``K`` templates alone (its fit)."""
    J = 2 * K if two else K
    pairs = [(a, c) for a in range(J) for c in range(a, J)]
    L = [*_head("flux, ivar, T, V, k1, o1, k2, o2, out", "flux.shape[1]"),
         "        if k1[b] < 0 or k2[b] < 0:",
         "            continue",
         "        f = flux[b]",
         "        iv = ivar[b]",
         "        V1 = V[k1[b], o1[b]:o1[b] + npix]",
         *[f"        T{a} = T[k1[b], {a}, o1[b]:o1[b] + npix]" for a in range(K)],
         *[f"        T{K + a} = T[k2[b], {a}, o2[b]:o2[b] + npix]" for a in range(J - K)],
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


def _joint_kernel(K: int, two: bool = True):
    key = ("joint", K, two)
    if key not in _KERNELS:
        ns: dict = {"np": np}
        name = f"<redsift eigen {'joint' if two else 'fit'} kernel K={K}>"
        exec(compile(_joint_source(K, two=two), name, "exec"), ns)  # noqa: S102 - our own source
        _KERNELS[key] = njit(fastmath=True, boundscheck=False, nogil=True)(ns["kern"])
    return _KERNELS[key]


def joint_sums(flux, ivar, T, V, k1, o1, k2=None, o2=None) -> np.ndarray:
    """The sums of the joint fit of two solutions (:func:`redsift.models.eigen._final`'s two objects in one
    fibre) ``(B, 2K + 2K(2K+1)/2 + 1)``: ``b``, packed ``M`` (pairs ``a <= c`` in row order) and ``F``, with
    the weights ``ivar`` on the first solution's coverage; rows with ``k1 < 0`` or ``k2 < 0`` are left zero.
    ``o1``, ``o2``: the rest-grid offsets of the two windows (``s_max - shift``). Without ``k2``: the first
    solution's own fit, ``(B, K + K(K+1)/2 + 1)``."""
    B, K = flux.shape[0], T.shape[1]
    two = k2 is not None
    J = 2 * K if two else K
    out = np.zeros((B, J + J * (J + 1) // 2 + 1))
    if not two:
        k2, o2 = np.zeros(B, np.int64), np.asarray(o1)
    if B:
        npix = flux.shape[1]
        for o in (o1, o2):
            if int(np.min(o)) < 0 or int(np.max(o)) + npix > T.shape[2]:
                raise ValueError("a window reaches beyond the rest grid")
        _joint_kernel(K, two)(np.ascontiguousarray(flux, np.float32), np.ascontiguousarray(ivar, np.float32), T, V,
                              *(np.ascontiguousarray(x, np.int64) for x in (k1, o1, k2, o2)), out)
    return out


@njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract", "nsz"})
def _residual_stats(flux, ivar, T, V, k1, o1, a, window, step, smooth, full, r, c2, cn, vals, out):  # pragma: no cover - compiled
    B, npix = flux.shape
    K = T.shape[1]
    third = npix // 3
    for b in range(B):
        k = k1[b]
        if k < 0:
            continue
        o = o1[b]
        Tk = T[k]
        Vk = V[k, o:o + npix]
        fb = flux[b]
        ib = ivar[b]
        r[:] = 0.0
        for c in range(K):  # the model, template by template (contiguous rows)
            ac = a[b, c]
            Tc = Tk[c, o:o + npix]
            for n in range(npix):
                r[n] -= ac * Tc[n]
        nsn = 0
        c2[0] = 0.0
        cn[0] = 0.0
        for n in range(npix):  # residuals on the answer's coverage, prefix sums, the fitted pixels' S/N
            x = np.float64(fb[n])
            w = np.float64(ib[n]) if Vk[n] > 0 else 0.0
            g = w > 0
            rn = (x + r[n]) * np.sqrt(w) if g else 0.0
            r[n] = rn
            c2[n + 1] = c2[n] + rn * rn
            cn[n + 1] = cn[n] + g
            if g and full:
                vals[nsn] = abs(x) * np.sqrt(w)
                nsn += 1
        ng = cn[npix]
        n1 = max(ng, 1.0)
        s2 = c2[npix]
        rchi2 = max(s2 / n1, 1.0)
        best = -np.inf  # the largest excess chi-square over windows of `window` pixels every `step` (anomaly_score)
        for start in range(0, npix - window + 1, step):
            wn = cn[start + window] - cn[start]
            if wn >= window / 2:
                best = max(best, ((c2[start + window] - c2[start]) / rchi2 - wn) / np.sqrt(2.0 * max(wn, 1.0)))
        out[b, 0] = max(best, 0.0)
        out[b, 7] = ng
        if not full:  # the anomaly score and the fitted pixels only
            continue
        out[b, 1] = np.partition(vals[:nsn], (nsn - 1) // 2)[(nsn - 1) // 2] if nsn else np.nan  # lower median
        # the residuals' shape (residual_shape)
        ss = max(s2, 1e-30)
        lag = 0.0
        nout = 0
        for n in range(npix - 1):
            lag += r[n + 1] * r[n]
        for n in range(npix):
            nout += r[n] * r[n] > 25
        out[b, 2] = lag / ss
        out[b, 3] = np.log10(1e-4 + nout / n1)
        rchi = np.sqrt(max(ss / n1, 1.0))
        box = 0.0
        for n in range(1, smooth + 1):
            box += r[n]
        hi = box
        lo = box
        for n in range(smooth + 1, npix):  # windows r[j + 1 .. j + smooth], as cumsum differences take them
            box += r[n] - r[n - smooth]
            hi = max(hi, box)
            lo = min(lo, box)
        out[b, 4] = hi / np.sqrt(smooth) / rchi
        out[b, 5] = -lo / np.sqrt(smooth) / rchi
        cb = c2[third] / max(cn[third], 1.0)
        cr = (c2[npix] - c2[npix - third]) / max(cn[npix] - cn[npix - third], 1.0)
        out[b, 6] = np.log(max(cb, 1e-6) / max(cr, 1e-6))


def residual_stats(flux, ivar, T, V, k1, o1, a, window: int = 64, step: int = 16, smooth: int = 5,
                   full: bool = True) -> np.ndarray:
    """The final stage's statistics of each answer's residuals in one compiled pass per spectrum, instead
    of a stacked template window, batched products and ~12 passes over whole-batch tensors
    (:func:`redsift.models.eigen._final`'s torch path): the model ``m = sum_c a_c T_c`` on the answer's
    coverage (``V > 0``; ``T`` times ``V`` as for :func:`window_sums`), ``r = (f - m) sqrt(w)``, then
    ``(B, 8)``: :func:`redsift.models.eigen.anomaly_score` (``window``, ``step``), the lower median of
    ``|f| sqrt(w)`` over the fitted pixels, :func:`redsift.models.eigen.residual_shape`'s five statistics
    (``smooth``) and the number of fitted pixels, in float64 (the torch path's to ~1e-4: its sums are
    float32). Rows with ``k1 < 0`` are NaN. ``o1``: rest-grid offsets ``s_max - shift``; ``a``: the answer's
    coefficients ``(B, K)``. ``full=False``: the anomaly score and the pixel count only (columns 1-6 NaN: a
    refinement window reads nothing else)."""
    B, npix = flux.shape
    if npix < max(window, smooth + 1, 3):
        raise ValueError(f"residual_stats needs at least {max(window, smooth + 1, 3)} pixels, got {npix}")
    out = np.full((B, 8), np.nan)
    if B:
        if int(np.min(o1)) < 0 or int(np.max(o1)) + npix > T.shape[2]:
            raise ValueError("a window reaches beyond the rest grid")
        _residual_stats(np.ascontiguousarray(flux, np.float32), np.ascontiguousarray(ivar, np.float32), T, V,
                        np.ascontiguousarray(k1, np.int64), np.ascontiguousarray(o1, np.int64),
                        np.ascontiguousarray(a, np.float64), int(window), int(step), int(smooth), bool(full), np.empty(npix),
                        np.empty(npix + 1), np.empty(npix + 1), np.empty(npix), out)
    return out


@njit(cache=True, nogil=True, boundscheck=False)
def _scan_data(X, npix, flux, ivar, D4, ntot):  # pragma: no cover - compiled
    B = X.shape[0]
    zero = np.float32(0)
    one = np.float32(1)
    for b in range(B):
        fo, wo = flux[b], ivar[b]
        d0, d1, d2, d3 = D4[b, 0], D4[b, 1], D4[b, 2], D4[b, 3]
        n = zero
        for p in range(npix):  # branch-free (selects), float32 as the torch path computes them
            f = np.float32(X[b, p])
            w = np.float32(X[b, npix + p])
            w = w if (w > zero) | (w != w) else zero  # clamp_min(0): negatives (-inf too) -> 0, NaN kept
            ok = (f - f == zero) & (w - w == zero)  # both finite (x - x is NaN for NaN and +-inf)
            w = w if ok else zero
            f = f if ok else zero
            fo[p] = f
            wo[p] = w
            wf = w * f
            d0[p] = wf
            d1[p] = w
            d2[p] = wf * f
            g = one if w > zero else zero
            d3[p] = g
            n += g
        ntot[b] = n


def scan_data(X: np.ndarray, npix: int):
    """The scan's inputs from ``X`` (flux then ivar, ``(B, 2 npix)``) in one pass:
    :func:`redsift.models.eigen._data`'s flux and ivar (non-finite pixels zeroed in both, negative ivar
    zeroed), its data vectors ``(B, 4, npix)`` (``w f``, ``w``, ``w f^2``, ``[w > 0]``) and the count of
    pixels with weight, float32 as the torch path computes them (the same values: its ~10 whole-batch
    operations read and wrote ~6 arrays of the batch's size)."""
    B = X.shape[0]
    flux = np.empty((B, npix), np.float32)
    ivar = np.empty((B, npix), np.float32)
    D4 = np.empty((B, 4, npix), np.float32)
    ntot = np.empty(B, np.float32)
    if B:
        _scan_data(np.ascontiguousarray(X), int(npix), flux, ivar, D4, ntot)
    return flux, ivar, D4, ntot
