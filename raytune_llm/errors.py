"""Exceptions that the CLI turns into a one-line reason and a non-zero exit.

Anything raised as a `RaytuneLLMError` is a user-facing problem (bad config,
bad input file, missing model) whose message already says what to fix; the
CLI prints it without a stack trace. Everything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class RaytuneLLMError(Exception):
    """Base class of every error whose message is meant for the user."""


class ConfigError(RaytuneLLMError):
    """One or more problems in a config file or its overrides.

    `problems` holds one line per problem, each `source: dotted.path: message (got X)`,
    so that every problem is reported at once rather than one per run.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        header = f"{len(self.problems)} problem(s) in the configuration:"
        super().__init__("\n".join([header, *("  - " + p for p in self.problems)]))


class DataError(RaytuneLLMError):
    """An input file that cannot be used as it is (missing, wrong columns, bad values)."""


class ModelError(RaytuneLLMError):
    """A model id or path that cannot be loaded."""


class TrainingError(RaytuneLLMError):
    """A training run or sweep that failed; the message names the trial and the cause."""
