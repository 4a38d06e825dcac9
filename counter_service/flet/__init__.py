"""Everything that touches Flet: live counters on pages, the cross-process hub, websocket life."""
