"""What every run directory records so a result can be traced: the resolved config, the
versions of the packages that produced it, the machine, and a fingerprint of the data."""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from alignloop.hardware import PrecisionChoice, hardware_report

TRACKED_PACKAGES = ("alignloop", "torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "tokenizers")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_description() -> dict[str, Any]:
    """The machine as run_info.json records it (without a run's precision choice)."""
    return hardware_report()


def write_run_info(run_dir: Path, config_yaml: str, data: dict[str, Any], world_size: int,
                   precision: PrecisionChoice | None = None) -> None:
    """Write config.yaml and run_info.json (main process only)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml, encoding="utf-8")
    info = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "world_size": world_size,
        "versions": package_versions(),
        "machine": hardware_report(precision),  # CPU model, ISA flags, threads, precision and attention chosen
        "data": data,
    }
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
