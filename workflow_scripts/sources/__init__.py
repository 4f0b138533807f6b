"""Image sources: one module per ``datasets.<name>.source``, and their registry.

:mod:`workflow_scripts.sources.registry` says how the workflow treats each source and names
the module holding its code (the ``manifest`` source's is :mod:`workflow_scripts.download`).
"""
