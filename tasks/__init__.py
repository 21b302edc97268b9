"""Pipeline steps of linreg-flow: pure functions first, thin Prefect tasks last, one module a step."""
