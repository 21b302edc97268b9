"""The commands that read versions and never touch Prefect or torch: show, diff, versions, predict."""
