"""Citygate's built-in plugins, installed as the package ``citygate_plugins``.

Each is registered through the ``gateway`` entry point group exactly like a third-party
plugin, and marked ``trylast`` so an integrator's plugin of the same id wins.
"""
