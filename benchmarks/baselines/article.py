"""Baseline (b): the pattern of the article in `shared/seed-article.txt`, kept as it is.

A counter is a text file: read it, add one, write it back. Each change is shown with
`page.update()` and broadcast with `page.pubsub.send_all()`; the subscriber is a plain
(non-async) function that sets the Text and calls `page.update()`. Every process given
the same `--file` shares the counters, as the article's `views.txt` is shared.

Its flaws are the point of the comparison, so they stay:
- read, +1, write is not atomic: two processes (or two sessions) can both read n and both
  write n + 1, and a reader that catches the file between truncate and write reads ""
  and starts again from 0;
- `page.pubsub` only reaches sessions of the same process;
- the plain subscriber runs in Flet's thread pool, and `page.update()` from there is
  not thread-safe;
- a new session broadcasts to every session (the article's "sync on load" `send_all`),
  so sessions joining one after another cost work quadratic in their number;
- nobody unsubscribes: a closed session keeps receiving until Flet expires it.

Counter NAME lives in `FILE.NAME` (`views`, `clicks`).
Run: `python -m benchmarks.baselines.article --port P --file /tmp/counter`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flet as ft

from benchmarks.baselines._serve import parser, serve_flet


def counter_path(base: Path, name: str) -> Path:
    """The file holding counter `name` for the base path given as `--file`."""
    return base.with_name(f"{base.name}.{name}")


def get_count(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (ValueError, FileNotFoundError):
        return 0


def set_count(path: Path, count: int) -> None:
    path.write_text(str(count))


def build_main(base: Path) -> Any:
    views_file = counter_path(base, "views")
    clicks_file = counter_path(base, "clicks")

    def main(page: ft.Page) -> None:
        # Each new visit counts one view (the article counted route changes only).
        views_count = get_count(views_file) + 1
        set_count(views_file, views_count)
        texts = {
            "views": ft.Text(str(views_count), key="views", size=24),
            "clicks": ft.Text(str(get_count(clicks_file)), key="clicks", size=24),
        }

        def bump(name: str, path: Path) -> None:
            # 1. "update the shared state", 2. update this page, 3. broadcast.
            count = get_count(path) + 1
            set_count(path, count)
            texts[name].value = str(count)
            page.update()
            page.pubsub.send_all({"action": f"update_{name}", "count": count})

        def on_click(_e: Any) -> None:
            bump("clicks", clicks_file)

        def route_change(_e: Any) -> None:
            bump("views", views_file)

        def on_message(msg: Any) -> None:
            for name, text in texts.items():
                if msg.get("action") == f"update_{name}":
                    text.value = str(msg["count"])
                    page.update()

        page.on_route_change = route_change
        page.pubsub.subscribe(on_message)
        button = ft.Button(key="increment", content="Add a click", on_click=on_click)
        page.add(ft.Container(content=ft.Column([*texts.values(), button]), padding=20))
        page.pubsub.send_all({"action": "update_views", "count": views_count})

    return main


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--file", type=Path, required=True, help="base path of the counter files")
    ns = args.parse_args()
    serve_flet(build_main(ns.file), ns.host, ns.port)


if __name__ == "__main__":
    main()
