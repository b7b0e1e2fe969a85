project = 'monasca-persister-dbpt'
copyright = '2026, monasca-persister-dbpt developers'
extensions = [
    'oslo_config.sphinxext',
    'stevedore.sphinxext',
]
master_doc = 'index'
exclude_patterns = []
html_theme = 'alabaster'
