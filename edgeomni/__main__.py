import sys

from edgeomni.cli import main

sys.exit(main())
