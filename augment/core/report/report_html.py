"""The report's Markdown as one self-contained HTML page: figures inlined, styles inline, no script."""

from __future__ import annotations

import base64
import re
from pathlib import Path

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 + p { font-size: 1.15em; background: #f4f7fb; border-left: 4px solid #1f77b4; padding: 0.8em 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def render_html(md: str, report_dir: Path) -> str:
    """One self-contained HTML page from the report's markdown: figures inlined as data: URIs,
    styles inline, no script and no link to anything outside the file. Raw HTML in the Markdown is
    shown as text, never passed through (CommonMark with tables, markdown-it-py's html=False): names
    from the user's data cannot add markup (they are escaped for Markdown too, core.safe_text)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)

    def inline(match: re.Match) -> str:
        data = base64.b64encode((Path(report_dir) / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[A-Za-z0-9_]+\.png)"', inline, body)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>Augmentation report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
