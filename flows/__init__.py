"""Orchestration of linreg-flow: the Prefect flow, its schedule and the `linreg` command line."""
