"""The monasca-api side: read each tenant where the persister wrote it.

monasca-api (11.0.0, the last release) loads its metrics repository from
``[repositories] metrics_driver``; :mod:`.metrics_repository` is one it can
name, needing the ``[api]`` extra. Nothing else in this package imports
monasca-api.
"""
