"""``chouette weights pull|list``: the ImageNet weights cache that ``--weights imagenet`` reads.

``pull ARCH...`` fills the cache from ``TRAINER_WEIGHTS_SOURCE`` (or ``--source URL|DIR``)
and checks every file's hash before it takes its cache name; ``list`` shows which files
are cached and valid. Same file names, hashes and directory as ``keras.utils.get_file``
in the trainer (``shared.pretrained``). No TensorFlow is imported.

Exit codes: 0 all done, 1 a download or checksum failure (one line each on stderr),
2 an unknown architecture (nothing fetched).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chouette.errors import FAILED, OK, UsageError
from shared import pretrained
from shared.settings import TrainerSettings


def run_weights(args: argparse.Namespace) -> int:
    settings = TrainerSettings()
    directory = pretrained.cache_dir(args.cache_dir or settings.weights_cache_dir)
    if args.action == "list":
        return _list(directory)
    source = args.source if args.source is not None else settings.weights_source
    return _pull(args.architectures, source, directory, settings.weights_timeout)


def _entries(names: list[str]) -> list[pretrained.WeightsFile]:
    if any(name.lower() == "all" for name in names):
        return list(pretrained.FILES.values())
    try:
        entries = [pretrained.weights_file(name) for name in names]
    except pretrained.UnknownArchitecture as exc:
        raise UsageError(f"ARCH: {exc}") from None
    return list(dict.fromkeys(entries))


def _pull(names: list[str], source: str, directory: Path, timeout: float) -> int:
    entries = _entries(names)
    failed = 0
    for entry in entries:
        try:
            path, fetched = pretrained.pull(entry, source, directory, timeout=timeout)
        except pretrained.PretrainedError as exc:
            print(f"chouette: weights pull {entry.architecture}: {exc}", file=sys.stderr)
            failed += 1
            continue
        state = "fetched" if fetched else "already cached"
        print(f"{entry.architecture:<12} {state:<15} {path}")
    if failed and len(entries) > 1:
        where = pretrained.describe(source)
        print(f"chouette: {failed} of {len(entries)} not cached (source {where})", file=sys.stderr)
    return FAILED if failed else OK


def _list(directory: Path) -> int:
    print(f"cache {directory}")
    for entry in pretrained.FILES.values():
        path = directory / entry.file_name
        if not path.is_file():
            state = "missing"
        elif pretrained.is_valid(path, entry):
            state = "valid"
        else:
            state = f"CORRUPT ({entry.algorithm} differs: pull it again)"
        print(f"{entry.architecture:<12} {state:<8} {entry.file_name}")
    return OK
