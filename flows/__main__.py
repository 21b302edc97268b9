"""`python -m flows` is the same as the `linreg` command."""

from flows.cli import main

if __name__ == "__main__":
    main()
