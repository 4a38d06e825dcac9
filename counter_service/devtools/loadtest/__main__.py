import sys

from counter_service.devtools.loadtest.cli import main

sys.exit(main())
