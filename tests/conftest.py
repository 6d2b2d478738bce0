"""Shared fixtures: the Microsoft cloud emulator and helpers to run the tap as a real process."""

pytest_plugins = ["emulator.pytest_plugin"]
