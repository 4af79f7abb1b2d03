import sys

from bagoftricks.cli import main

sys.exit(main())
