#!/usr/bin/env python3
"""Fails on a broken relative link or anchor in the built book (book/book)."""
import html.parser
import pathlib
import sys
import urllib.parse

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "book/book")


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


pages = {}
for page in root.rglob("*.html"):
    p = Links()
    p.feed(page.read_text(errors="replace"))
    pages[page.resolve()] = p

broken = []
for page, p in pages.items():
    for href in p.hrefs:
        url = urllib.parse.urlparse(href)
        if url.scheme or href.startswith("//") or href.startswith("mailto:"):
            continue  # external: not reachable from here, not checked
        target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            broken.append(f"{page.relative_to(root.resolve())}: {href} (no such file)")
        elif url.fragment and target in pages and url.fragment not in pages[target].ids:
            broken.append(f"{page.relative_to(root.resolve())}: {href} (no such anchor)")

for b in broken:
    print("broken link:", b)
print(f"{len(pages)} pages checked, {len(broken)} broken links")
sys.exit(1 if broken else 0)
