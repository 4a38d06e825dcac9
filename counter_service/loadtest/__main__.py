import sys

from counter_service.loadtest.cli import main

sys.exit(main())
