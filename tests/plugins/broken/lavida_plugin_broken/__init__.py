"""Fails on import, as a plugin with a missing dependency would."""

import lavida_plugin_missing_dependency  # noqa: F401  (does not exist)
