"""The rules file ``brats_postprocessing.json``: a versioned JSON of :class:`~.rules.Rules`.

Layout (``schema_version`` 1)::

    {
      "format": "nnunet-transfer BraTS post-processing",
      "schema_version": 1,
      "rules": {"min_component_mm3": {"WT": 50.0, "TC": 0.0, "ET": 0.0, "NCR": 0.0, "ED": 0.0},
                "et_to_ncr": {"volume_mm3": 200.0, "et_tc_ratio": 0.0}},
      "tuning": {...}        # optional: how the rules were chosen (see tune.TuningResult.to_dict)
    }

Files are written to a temporary file beside the target and moved into place. A file of a
newer schema, or one that is not such a file, is refused with an error naming the file.

Example:
    >>> import os, tempfile
    >>> from nnunet_transfer.postprocessing.rules import Rules
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_rules(os.path.join(folder, FILE_NAME), Rules({"WT": 50}))
    ...     read_rules(path)
    Rules(min_component_mm3={'WT': 50.0}, et_to_ncr_volume_mm3=0.0, et_to_ncr_ratio=0.0)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Union

from nnunet_transfer.postprocessing.rules import Rules

PathLike = Union[str, Path]
FORMAT = "nnunet-transfer BraTS post-processing"
SCHEMA_VERSION = 1
FILE_NAME = "brats_postprocessing.json"


def _json_safe(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def rules_document(rules: Rules, tuning: Optional[dict] = None) -> dict:
    """The JSON document of ``rules`` (and the tuning record, if any)."""
    document = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "rules": rules.to_dict()}
    if tuning is not None:
        document["tuning"] = _json_safe(tuning)
    return document


def write_rules(path: PathLike, rules: Rules, tuning: Optional[dict] = None) -> Path:
    """Write ``rules`` (and ``tuning``) to ``path`` atomically; returns the path."""
    from nnunet_transfer.evaluation.evaluate import write_json_atomic

    return write_json_atomic(rules_document(rules, tuning), path)


def read_rules_file(path: PathLike) -> dict:
    """The validated document of a rules file (``rules`` parsed into :class:`Rules`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The post-processing rules file {path} does not exist "
                                f"(write it with `nnunet-transfer tune-postprocessing`).")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path} is not a post-processing rules file (no \"format\": \"{FORMAT}\").")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path}: schema_version must be an integer, got {version!r}.")
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {version}, newer than this nnunet-transfer reads "
                         f"({SCHEMA_VERSION}); upgrade nnunet-transfer.")
    if version < 1:
        raise ValueError(f"{path}: unknown schema_version {version}.")
    try:
        rules = Rules.from_dict(document.get("rules"))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return {**document, "rules": rules}


def read_rules(path: PathLike) -> Rules:
    """The :class:`Rules` of a rules file."""
    return read_rules_file(path)["rules"]
