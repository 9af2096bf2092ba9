"""Tables, figures, verdicts and the W&B summary from the run records: reads them through
``studies.store`` and ``studies.spec`` (the studies, their contrasts), configs through
``studies.config``, and uses ``tvconv`` for the data diagnostics and affinity-map figures."""
