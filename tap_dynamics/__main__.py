"""Run the tap as `python -m tap_dynamics`."""

from tap_dynamics.tap import cli

cli()
