"""Reading a file into plain text: the types the catalog ingests, and how.

Text types are decoded as UTF-8 (a BOM is dropped), else as Windows-1252,
else by `charset_normalizer`'s best guess; a file with NUL bytes in its head is
binary and refused. HTML loses its tags (stdlib `html.parser`); PDF text
comes from `pypdf`, pages separated by a blank line. Offsets stored with
chunks are offsets into this extracted text.
"""

from __future__ import annotations

import html
import html.parser
from pathlib import Path

from actors.knowledge.errors import UnreadableDocument

TEXT_TYPES = frozenset({"txt", "md", "rst", "csv", "json", "py", "js", "ts", "xml",
                        "yaml", "yml", "toml"})
CODE_TYPES = frozenset({"py", "js", "ts"})
TABLE_TYPES = frozenset({"csv"})
TYPES = TEXT_TYPES | {"html", "htm", "pdf"}
BINARY_PROBE = 8192


def file_type(path: Path) -> str | None:
    """The catalog's type of `path` (its suffix, lower case), or None if not read."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in TYPES else None


def extract(path: Path, data: bytes) -> str:
    """The text of `data` (the bytes of `path`); raises `UnreadableDocument`."""
    kind = file_type(path)
    if kind is None:
        raise UnreadableDocument(str(path), "unsupported", f"type {path.suffix!r} is not read")
    if kind == "pdf":
        return pdf_text(path, data)
    text = decode(path, data)
    return html_text(text) if kind in ("html", "htm") else text


def decode(path: Path, data: bytes) -> str:
    """UTF-8 if it is, else Windows-1252 (the usual legacy text), else a guess.

    Western legacy text is far more common than anything else among files
    that are not UTF-8, and statistical detection confuses its close cousins
    (cp1250 for cp1252 on short French text), so cp1252 goes first.
    """
    if b"\x00" in data[:BINARY_PROBE]:
        raise UnreadableDocument(str(path), "binary", "binary content (NUL bytes)")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise UnreadableDocument(str(path), "binary", "not text in any known encoding")
    return str(best)


class _TextOnly(html.parser.HTMLParser):
    """Collects the text of an HTML page, skipping scripts and styles."""

    SKIP = frozenset({"script", "style", "head"})
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                        "pre", "section", "article", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    return html.unescape("".join(parser.parts)).strip()


def pdf_text(path: Path, data: bytes) -> str:
    import io

    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # pypdf raises many kinds on damaged files; all mean "unreadable"
        raise UnreadableDocument(str(path), "parse", f"not a readable PDF ({exc})") from exc
    return "\n\n".join(page.strip() for page in pages if page.strip())
