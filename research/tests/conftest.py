"""The studies' tests use the package tests' tiny models and synthetic data."""

from tests.conftest import *  # noqa: F403
