"""`python -m flows` is the same as the `linreg` command."""

from flows.cli import entry

if __name__ == "__main__":
    entry()
