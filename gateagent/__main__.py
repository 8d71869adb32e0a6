import sys

from gateagent.cli import main

sys.exit(main())
