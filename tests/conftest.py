"""Shared fixtures: the Microsoft cloud emulator and helpers to run the tap as a real process."""

pytest_plugins = ["tests.emulator.pytest_plugin", "tests.pipeline_fixtures"]
