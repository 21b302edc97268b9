"""Publishing: the results in, a complete version folder and the Prefect UI's artifacts out.

`documents` builds the version's documents in memory (coefficients, comparison, design, manifest),
`writer` writes a version atomically (drift measured under the lock that publishes it), `reader`
reads versions back and checks them against their manifest, `markdown` renders the UI's summary
and table, `alerts` emits the drift and convergence events.
"""
