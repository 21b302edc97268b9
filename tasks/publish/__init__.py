"""Publishing: the results in, a complete version folder and the Prefect UI's artifacts out.

`schema` is the layout of a version folder (file names, format tags, each document as a dataclass),
`documents` builds the version's documents in memory (coefficients, comparison, design, manifest),
`drift` measures how a model's exact coefficients moved since its previous version,
`writer` writes a version atomically (drift measured under the lock that publishes it), `reader`
reads versions back and checks them against their manifest, `markdown` renders the UI's summary
and table, `alerts` emits the drift and convergence events.
"""
