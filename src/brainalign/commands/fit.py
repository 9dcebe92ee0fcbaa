"""``brainalign fit`` and ``brainalign validate``: LightningCLI on the DINOv3 module and data."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def run_lightning(args: Sequence[str]) -> None:
    """Run LightningCLI on the DINOv3 module and the SSL data module."""
    from lightning.pytorch.cli import LightningCLI

    from brainalign.train.data import SSLDataModule
    from brainalign.train.module import DINOv3Module

    argv, sys.argv = sys.argv, [sys.argv[0], *args]  # DDP relaunches sys.argv
    try:
        LightningCLI(
            DINOv3Module,
            SSLDataModule,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"allow_abbrev": False},  # a misspelt prefix is an error, not a match
            seed_everything_default=0,
            auto_configure_optimizers=False,
        )
    finally:
        sys.argv = argv
