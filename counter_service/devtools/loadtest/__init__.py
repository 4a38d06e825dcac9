"""`counter-service loadtest`: many headless sessions, steady clicking, exact accounting.

Modules: `options` (arguments, validation), `targets` (URLs or a spawned fleet),
`sessions` (opening at a ramp), `recorder` (what each session showed), `clicker` (paced
clicks, acknowledgement), `monitors` (Redis connections, loop lag), `runner` (the phases),
`propagation` and `accounting` (latency, loss, convergence), `stats` (percentiles),
`result` (the JSON), `report` (rich tables), `plot` (matplotlib), `progress` (live bars).
"""

from counter_service.devtools.loadtest.cli import add_parser, main, run

__all__ = ["add_parser", "main", "run"]
