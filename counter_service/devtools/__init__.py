"""Test and load tooling, apart from the library: headless Flet client, local fleet, load tester."""
