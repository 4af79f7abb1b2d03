"""`python -m bagoftricks.ablate ARGS` is `bagoftricks ablate ARGS`."""
import sys

from bagoftricks.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
