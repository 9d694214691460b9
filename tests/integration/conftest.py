"""Fixtures the integration modules share beyond tests/conftest.py: the local tailnet (one
per module that names it, torn down with the module)."""

from tests.support.tailnet import tailnet as tailnet
