"""Which local files ``--weights PATH`` may name: files of one kind, under one directory.

``TrainingParams.weights`` comes from a message: whoever can publish a request chooses the
path the trainer opens. Without limits that lets them probe the trainer's files (its
error says whether a path exists) and make it read any of them. A path is accepted only
when it resolves (symbolic links and ``..`` followed) inside ``TRAINER_WEIGHTS_DIR``, is a
regular file named ``*.h5`` and starts with the HDF5 signature, the format of Keras's
``*_notop.h5`` and ``.weights.h5`` files. A relative path is taken inside that
directory. Without ``TRAINER_WEIGHTS_DIR`` no path is accepted. A path outside the
directory is refused with the same message whether it exists or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

SETTING: Final = "TRAINER_WEIGHTS_DIR"
HDF5_SIGNATURE: Final = b"\x89HDF\r\n\x1a\n"
SUFFIX: Final = ".h5"


class WeightsFileRefused(ValueError):
    """A ``--weights PATH`` the trainer will not open (one-line message)."""


def allowed_weights_file(value: str, directory: str | Path) -> Path:
    """The file ``value`` names, resolved, or :class:`WeightsFileRefused`."""
    if not str(directory):
        raise WeightsFileRefused(
            f"--weights PATH is off on this trainer: set {SETTING} to the directory"
            " holding the weight files it may load"
        )
    base = Path(directory).expanduser().resolve()
    candidate = Path(value).expanduser()
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not resolved.is_relative_to(base) or resolved == base:
        raise WeightsFileRefused(f"weights file {value} is not under {SETTING} ({base})")
    if resolved.suffix != SUFFIX:
        raise WeightsFileRefused(f"weights file {value} is not a Keras *{SUFFIX} file")
    if not resolved.is_file():
        raise WeightsFileRefused(f"weights file {value} does not exist in {SETTING} ({base})")
    with resolved.open("rb") as handle:
        if handle.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise WeightsFileRefused(f"weights file {value} is not an HDF5 (Keras .h5) file")
    return resolved
