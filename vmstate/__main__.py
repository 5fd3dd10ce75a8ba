import sys

from vmstate.cli import main

sys.exit(main())
