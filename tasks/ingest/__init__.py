"""Ingest: a table in, a validated design out.

In: a CSV file, a Parquet file or a folder of Parquet files, and the model (target, features, degree,
intercept). Out (`prepare.Prepared`): the design (column statistics, terms), its geometry (TSQR R and the
well-conditioned basis) and the stored, content-addressed Parquet copy, in one pass over the rows.
Modules: `load` (readers by block), `validate` (one clear line per bad cell, column or option),
`store` (the content hash and the stored copy), `prepare` (the pass and its Prefect task).
"""
