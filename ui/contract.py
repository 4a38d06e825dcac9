"""What the page promises to tests, the load tester and the benchmarks: its control
keys and the counters behind them. Declared once, here."""

from counter_service import ONLINE as ONLINE

VIEWS = "views"
"""Counter and Text key: one per new session and per route change."""
CLICKS = "clicks"
"""Counter and Text key: one per click of the button."""
COUNTERS = (VIEWS, CLICKS, ONLINE)
"""Every number the page shows, each in a Text whose key is the counter's name."""
BUTTON = "increment"
"""Key of the button that adds a click."""
STATUS = "status"
"""Key of the Text that says what went wrong, empty when all is well."""
REPLICA = "replica"
"""Key of the Text that names the worker serving the session."""
UNREACHABLE = "unreachable"
"""Key of the banner that is visible while this worker cannot reach the store (the
numbers then show their last known values, faded)."""
