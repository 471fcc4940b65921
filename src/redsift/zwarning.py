"""The ZWARN bitmask of redsift catalogs.

Bits 0-15 keep the meanings of redrock's ``ZWarningMask``
(desihub/redrock ``py/redrock/zwarning.py``) so that catalogs from redsift and
redrock can be filtered with the same code. Bits 16-23 are the range redrock
leaves to afterburners; DESI already uses 16-19, so redsift's own bits are
20-23.

========  ===  ======================================================
name      bit  meaning
========  ===  ======================================================
SKY         0  sky fiber
LITTLE_COVERAGE 1  too little wavelength coverage on the model's grid
SMALL_DELTA_CHI2 2  best and second-best solutions too close
NEGATIVE_MODEL 3  synthetic spectrum is negative
MANY_OUTLIERS 4  fraction of points more than 5 sigma away is too large
Z_FITLIMIT  5  chi-squared minimum at edge of the redshift fitting range
NEGATIVE_EMISSION 6  a QSO line exhibits negative emission
UNPLUGGED   7  the fiber was unplugged/broken, yielding no signal
BAD_TARGET  8  catastrophically bad targeting data
NODATA      9  no data for this fiber (e.g. ivar = 0 everywhere, or the file could not be read)
BAD_MINFIT 10  bad parabola fit to the chi-squared minimum (redrock 0.21's name and meaning)
POORDATA   11  poor input data (too many masked or non-finite pixels)
BAD_INPUT  20  redsift: the input file or row could not be read at all
BAD_VALUES 21  redsift: non-finite flux or ivar values were found and masked
LOW_CONFIDENCE 22  redsift: the model's confidence is close to its decision threshold
OUT_OF_DISTRIBUTION 23  redsift: input unlike the model's training data
NO_REDSHIFT 24  redsift: the model measured no redshift for this spectrum (``Z`` is NaN), e.g.
            QuasarNET on a spectrum it does not call a quasar
NO_SIGNAL  25  redsift: the answer's fit explains the spectrum hardly better than no object at all (the
            default: its chi-square gain over a zero spectrum below the release's limit; pure noise)
========  ===  ======================================================

``ZWARN == 0`` means "trust Z" in DESI and SDSS work, so a row without a measured redshift always has
a bit set: ``NODATA`` (with ``BAD_INPUT`` when the input could not be read) or ``NO_REDSHIFT``. The
afterburner range 16-23 is full, so ``NO_REDSHIFT`` takes bit 24 and ``NO_SIGNAL`` bit 25 (``ZWARN`` is int64).
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["ZWarningMask", "describe"]


class ZWarningMask(enum.IntFlag):
    """Bit values of ``ZWARN`` (see the module docstring for their meaning)."""

    SKY = 2**0
    LITTLE_COVERAGE = 2**1
    SMALL_DELTA_CHI2 = 2**2
    NEGATIVE_MODEL = 2**3
    MANY_OUTLIERS = 2**4
    Z_FITLIMIT = 2**5
    NEGATIVE_EMISSION = 2**6
    UNPLUGGED = 2**7
    BAD_TARGET = 2**8
    NODATA = 2**9
    BAD_MINFIT = 2**10
    POORDATA = 2**11
    # redsift's own bits, in the afterburner range left free by DESI (20-23)
    BAD_INPUT = 2**20
    BAD_VALUES = 2**21
    LOW_CONFIDENCE = 2**22
    OUT_OF_DISTRIBUTION = 2**23
    NO_REDSHIFT = 2**24
    NO_SIGNAL = 2**25

    @classmethod
    def flags(cls) -> list[tuple[str, int]]:
        """``(name, bit value)`` pairs in bit order, as redrock's ``ZWarningMask.flags``."""
        return [(m.name, int(m.value)) for m in cls]


def describe(zwarn: int) -> list[str]:
    """Names of the bits set in one ``ZWARN`` value.

    >>> describe(512 | 2**20)
    ['NODATA', 'BAD_INPUT']
    """
    zwarn = int(np.int64(zwarn))
    return [name for name, value in ZWarningMask.flags() if zwarn & value]
