"""`TuneCache`: what a tuning run has measured, kept beside its report so an interrupted run resumes from it.

The file is rewritten atomically after every measurement. It records the context it was measured in (model,
weights, images, backend, batch, threads, ...); ``--resume`` with another context is refused, since a latency or
a cosine measured under other conditions would be silently wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from tofu_edge.errors import ConfigError
from tofu_edge.files import atomic_outputs

__all__ = ["TuneCache"]

VERSION = 1


class TuneCache:
    """Fidelity scores and latency measurements by candidate key.

    Args:
        path: The cache file.
        context: What the measurements depend on (JSON types).
        resume: Load the measurements in ``path``; otherwise start empty (the file is replaced on the first save).

    Raises:
        ConfigError: ``resume`` and the file is missing, unreadable, or was measured in another context.
    """

    def __init__(self, path: Path, context: dict, resume: bool) -> None:
        self.path, self.context = path, json.loads(json.dumps(context))
        self.fidelity: dict[str, dict] = {}
        self.latency: dict[str, dict] = {}
        if resume:
            self._load()

    def __len__(self) -> int:
        return len(self.fidelity) + len(self.latency)

    def save(self) -> None:
        """Write the cache atomically (a run killed mid-write leaves the previous file)."""
        payload = {"version": VERSION, "context": self.context, "fidelity": self.fidelity, "latency": self.latency}
        with atomic_outputs(self.path) as (temp,):
            temp.write_text(json.dumps(payload) + "\n")

    def _load(self) -> None:
        if not self.path.is_file():
            raise ConfigError(f"--resume: there is no tuning cache at {self.path} (run without --resume first)")
        try:
            payload = json.loads(self.path.read_text())
            stored, fidelity, latency = payload["context"], payload["fidelity"], payload["latency"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"--resume: {self.path} is not a tuning cache; delete it and run again") from None
        if payload.get("version") != VERSION or stored != self.context:
            changed = sorted(k for k in set(stored) | set(self.context) if stored.get(k) != self.context.get(k))
            raise ConfigError(
                f"--resume: {self.path} was measured with other settings ({', '.join(changed) or 'version'}); "
                "run with the same ones, or without --resume to start over"
            )
        self.fidelity, self.latency = dict(fidelity), dict(latency)
