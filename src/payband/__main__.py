"""`python -m payband`: the same as the `payband` command."""

from payband.cli import main

main()
