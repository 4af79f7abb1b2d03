import sys

from bagoftricks.cli import entry

sys.exit(entry())
