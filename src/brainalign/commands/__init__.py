"""Offline subcommands of the ``brainalign`` command (each module adds one subparser)."""
