"""The persister drivers, one module each, behind one small base class.

monasca-persister 9.0.0 names a driver as ``module:Class`` in
``[repositories]``; the same classes are published as stevedore entry points
in the ``monasca_persister_dbpt.repositories`` namespace.
"""
