"""The one place that chooses the wire engine (layer 2).

The Cython engine :mod:`pyroact._fastwire` is used when it is built, unless the environment
sets ``PYROACT_PUREPYTHON=1``; otherwise the pure-Python twin :mod:`pyroact._purewire` is.
Everything else in pyroact imports ``Frame``, ``FrameDecoder`` and ``encode_frame`` from here.

Attributes:
    FASTWIRE: True when the Cython engine is in use.
    IMPLEMENTATION: ``"cython"`` or ``"python"``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from . import _wirespec as spec

if TYPE_CHECKING:
    # The engines share one contract; stubtest holds _fastwire.pyi to it.
    from ._purewire import Frame, FrameDecoder, encode_frame
elif os.environ.get("PYROACT_PUREPYTHON"):
    from ._purewire import Frame, FrameDecoder, encode_frame
else:
    try:
        from ._fastwire import Frame, FrameDecoder, encode_frame
    except ImportError:
        from ._purewire import Frame, FrameDecoder, encode_frame

IMPLEMENTATION: Final[str] = (
    "cython" if FrameDecoder.__module__ == "pyroact._fastwire" else "python"
)
FASTWIRE: Final[bool] = IMPLEMENTATION == "cython"

__all__ = ["FASTWIRE", "IMPLEMENTATION", "Frame", "FrameDecoder", "encode_frame", "spec"]
