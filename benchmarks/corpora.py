"""Build the recipe study's corpora offline, from texts that Debian packages and Python ship.

    python benchmarks/corpora.py [--out ~/.cache/charlstm-study]      # prints what it built

| name | kind | about | from |
| --- | --- | --- | --- |
| fortunes-100k | English prose (quotes, jokes, verse) | 100 thousand chars | Debian's `fortunes` |
| fortunes-1m | English prose (quotes, jokes, verse) | 1.0 million chars | Debian's `fortunes`: the text after fortunes-100k's |
| russian-2m | Russian prose, 166 symbols | 2.0 million chars | Debian's `fortunes-ru` |
| pydocs-10m | English technical prose | 10 million chars | Debian's `python3.11-doc` (HTML to text) |
| pycode-50m | Python source code (ASCII files) | 50 million chars | this interpreter's library (stdlib, site-packages) |
| pycode-heldout | Python source code, for measuring only | 250 thousand chars | the files past pycode-50m's cut, evenly spread |
| cjk-man | Chinese and Japanese, 4,108 symbols | 18 million chars | Debian's `manpages-zh`, `manpages-ja`, `manpages-ja-dev` (groff to text) |
| french-man | French technical prose | 3 million chars | Debian's `manpages-fr` (groff to text) |
| c-headers | C source code (ASCII headers) | 20 million chars | /usr/include (`linux-libc-dev`, `libc6-dev`, ...) |
| cjk-docs | Japanese, Chinese and Korean, 3,061 symbols | 1.3 million chars | Debian's `debian-reference-{ja,zh-cn,zh-tw}` (HTML to text), `debian-faq-{ja,ko,zh-cn}` |
| german-man | German technical prose, 765 symbols | 5 million chars | the German man pages (`manpages-de` and others' translations) |
| russian-man | Russian technical prose, 836 symbols | 2.9 million chars | the Russian man pages (`manpages-ru` and others' translations) |
| perl-lib | Perl source code and POD (ASCII files) | 8.9 million chars | Perl's library (`perl-modules-5.36`) |
| polish-man | Polish technical prose, 469 symbols | 4.8 million chars | the Polish man pages (`manpages-pl` and others' translations) |
| go-src | Go source code (ASCII files) | 20 million chars | Go's own source tree (`golang-1.19-src`) |
| spanish-man | Spanish technical prose | 1.5 million chars | the Spanish man pages (`manpages-es` and others' translations) |
| tcl-lib | Tcl source code (ASCII files) | 0.9 million chars | Tcl's and Tk's script libraries (`libtcl8.6`, `libtk8.6`) |
| fortunes-zh | Chinese sayings and poems, 6,173 symbols | 1.0 million chars | Debian's `fortunes-zh` (colour codes removed) |

The first six fit the recipe's loss law (benchmarks/fit.py) with tiny-shakespeare (pycode-heldout
measures pycode-50m's runs; fortunes-1m, added after every verdict below, is a second text of
tiny-shakespeare's size that 10 minutes reads many times over, for the law's cost of reading a
text again); the others
are held out: they take no part in the law or any rule and judge the recipe (benchmarks/heldout.py).
cjk-docs was built after cjk-man's first verdict, to see whether a large vocabulary needs a term
of its own in the law (RESULTS.md: it did not get one); german-man, russian-man and perl-lib after
every verdict on the first four, to judge what those suggested; polish-man and go-src after
every verdict on those, to judge one rule that the first two sets suggested (RESULTS.md);
spanish-man and tcl-lib after every verdict on those, two short texts that 10 minutes reads many
times over, to judge the law's width where the text repeats (RESULTS.md). fortunes-zh, built
after all of those, decides one rule (whether the recipe may choose two layers for a vocabulary
far larger than the fit corpora's) and judges nothing.

The Debian packages install with `python benchmarks/corpora.py --install` (apt-get, as root; the
script says which package is missing otherwise). Each corpus is a deterministic function of those files (sorted paths,
fixed cut), so two machines with the same packages build the same text. Corpora are never
committed: they are rebuilt here in seconds.
"""

import argparse
import gzip
import hashlib
import html.parser
import os
import random
import re
import subprocess
import sysconfig
from pathlib import Path

PACKAGES = ["fortunes", "fortunes-ru", "python3.11-doc", "manpages-zh", "manpages-ja",
            "manpages-ja-dev", "manpages-fr", "groff-base", "linux-libc-dev", "libc6-dev",
            "debian-reference-ja", "debian-reference-zh-cn", "debian-reference-zh-tw",
            "debian-faq-ja", "debian-faq-ko", "debian-faq-zh-cn", "manpages-de", "manpages-ru",
            "perl-modules-5.36", "manpages-pl", "golang-1.19-src", "manpages-es", "libtcl8.6",
            "libtk8.6", "fortunes-zh"]
FORTUNES = Path("/usr/share/games/fortunes")
MAN = Path("/usr/share/man")
PYDOCS = Path("/usr/share/doc/python3.11/html")
DEBREF = Path("/usr/share/debian-reference")
DEBFAQ = Path("/usr/share/doc/debian/FAQ")
PERL = Path("/usr/share/perl/5.36.0")
GO = Path("/usr/share/go-1.19/src")
TCL = Path("/usr/share/tcltk")
DEFAULT_OUT = Path.home() / ".cache" / "charlstm-study"


def _fortune_files(folder):
    """The text files of a fortune folder: not the .dat indexes, .u8 variants or links."""
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()
            and p.suffix not in (".dat", ".u8")]


def _need(path, package):
    if not path.exists():
        raise SystemExit(f"{path} not found: install it with  apt-get install {package}")


def _cut(parts, max_chars):
    """Join `parts` and cut the result at the last line end before max_chars."""
    text = "".join(parts)[:max_chars]
    return text[:text.rfind("\n") + 1] or text


# fortunes-zh puts its files in the English folder: they are not English fortunes
ZH_FORTUNES = ("chinese", "song100", "tang300")


def _english_fortunes():
    _need(FORTUNES, "fortunes")
    return [p.read_text("utf-8") for p in _fortune_files(FORTUNES) if p.name not in ZH_FORTUNES]


FORTUNES_100K = 100_000           # fortunes-100k's cut; fortunes-1m starts after it


def fortunes_en(max_chars=FORTUNES_100K):
    return _cut(_english_fortunes(), max_chars)


def fortunes_1m():
    """The 1 million characters of English fortunes after fortunes-100k's (no text of both)."""
    parts = _english_fortunes()
    first = len(_cut(parts, FORTUNES_100K))
    return _cut(parts, first + 1_000_000)[first:]


def chinese_fortunes():
    """Debian's Chinese fortunes (`fortunes-zh`: sayings, Tang and Song poems) without the
    terminal colour codes the files carry, the entries shuffled (seeded): in the files' order the
    last tenth, the validation split, is all classical poetry."""
    _need(FORTUNES / "chinese", "fortunes-zh")
    text = "".join((FORTUNES / name).read_text("utf-8") for name in ZH_FORTUNES)
    while (plain := re.sub(r"\x1b\[[0-9;]*m", "", text)) != text:   # codes nest in places
        text = plain
    entries = [e for e in text.split("\n%\n") if e.strip()]
    random.Random(0).shuffle(entries)
    return "\n%\n".join(entries) + "\n%\n"


def russian():
    _need(FORTUNES / "ru", "fortunes-ru")
    return "".join(p.read_text("utf-8").replace("\r\n", "\n") for p in _fortune_files(FORTUNES / "ru"))


class _TextOf(html.parser.HTMLParser):
    """The visible text of a Sphinx page's body: paragraphs, code and tables, not navigation
    (`whole`: of the whole page)."""

    SKIP = {"script", "style", "head"}

    def __init__(self, whole=False):
        super().__init__()
        self.out, self.depth, self.body = [], 0, int(whole)

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.depth += 1
        if tag == "div" and ("role", "main") in attrs:
            self.body = 1
        elif tag == "div" and self.body:
            self.body += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.depth -= 1
        if tag == "div" and self.body:
            self.body -= 1
        if tag in ("p", "pre", "li", "dt", "dd", "h1", "h2", "h3", "tr") and self.body:
            self.out.append("\n")

    def handle_data(self, data):
        if self.body and not self.depth:
            self.out.append(data)


def _html_text(page, whole=False):
    """A page's visible text, a line per block, its runs of spaces collapsed."""
    parser = _TextOf(whole)
    parser.feed(page.read_text("utf-8", errors="replace"))
    lines = [" ".join(line.split()) for line in "".join(parser.out).splitlines()]
    return "\n".join(line for line in lines if line) + "\n\n"


def pydocs(max_chars=10_000_000):
    _need(PYDOCS, "python3.11-doc")
    return _cut([_html_text(page) for page in sorted(PYDOCS.rglob("*.html"))], max_chars)


def cjk_docs():
    """Debian's reference (Japanese, both Chinese scripts) and FAQ (Japanese, Korean, Chinese)."""
    parts = []
    for lang in ("ja", "zh-cn", "zh-tw"):
        _need(DEBREF / f"index.{lang}.html", "debian-reference-" + lang)
        parts += [_html_text(page, whole=True) for page in sorted(DEBREF.glob(f"*.{lang}.html"))]
    for lang in ("ja", "ko", "zh-cn"):
        faq = DEBFAQ / f"debian-faq.{lang}.txt.gz"
        _need(faq, "debian-faq-" + lang)
        parts.append(gzip.open(faq).read().decode("utf-8").replace("\r\n", "\n"))
    return "".join(parts)


def _python_files():
    """The text of every ASCII .py file under this interpreter's library folders, sorted by path
    (a few test files hold thousands of other symbols, which would make pycode-50m a study of
    the softmax)."""
    roots = sorted({sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")})
    seen = set()
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            try:
                yield path.read_bytes().decode("ascii")
            except (OSError, UnicodeDecodeError):
                continue


def pycode(max_chars=50_000_000):
    """Python source under this interpreter's library folders, the first max_chars of it."""
    parts, total = [], 0
    for text in _python_files():
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return _cut(parts, max_chars)


def pycode_heldout(max_chars=250_000, after=50_000_000, longest=40_000):
    """Python source that pycode-50m does not hold: files past its cut, evenly spread (one in
    every k of those under `longest` characters). pycode-50m's own last 250,000 characters, its
    validation split, are one package's AWS policy documents in JSON, not code; this measures
    its runs on code."""
    files, total = _python_files(), 0
    for text in files:
        total += len(text)
        if total >= after:
            break
    rest = [text for text in files if len(text) <= longest]
    k = max(1, round(sum(map(len, rest)) / max_chars))
    return _cut(rest[::k], max_chars)


def render_man(page):
    """A man page (a .gz of roff) as the plain text `man` shows, rendered by groff (Debian's
    groff-base) without bold, underline or colour, its justified spaces collapsed."""
    source = gzip.open(page).read()
    out = subprocess.run(["groff", "-k", "-Tutf8", "-man", "-P-cbou"], input=source,
                         capture_output=True, check=True).stdout.decode("utf-8")
    lines = [" ".join(line.split()) for line in out.splitlines()]
    return "\n".join(line for line in lines if line) + "\n\n"


def _man_pages(languages):
    """The text of every man page of these languages (folders under /usr/share/man), sorted."""
    for lang in languages:
        _need(MAN / lang, "manpages-" + lang.split("_")[0])
        for page in sorted((MAN / lang).rglob("*.gz")):
            try:
                yield render_man(page)
            except (OSError, UnicodeDecodeError, subprocess.CalledProcessError):
                continue


def _spread(pages, max_chars):
    """Every k-th of `pages`, k chosen so the pages kept hold about max_chars, cut there."""
    pages = list(pages)
    k = max(1, round(sum(map(len, pages)) / max_chars))
    return _cut(pages[::k], max_chars)


def cjk_man(max_chars=20_000_000):
    return _spread(_man_pages(["zh_CN", "zh_TW", "ja"]), max_chars)


def french_man(max_chars=3_000_000):
    return _spread(_man_pages(["fr"]), max_chars)


def german_man(max_chars=5_000_000):
    return _spread(_man_pages(["de"]), max_chars)


def russian_man(max_chars=3_000_000):
    return _spread(_man_pages(["ru"]), max_chars)


def perl_lib(max_chars=20_000_000):
    """Perl's own library (Debian's perl-modules): its ASCII .pm files, code and POD, sorted."""
    _need(PERL / "strict.pm", "perl-modules-5.36")
    return _cut(list(_ascii_files(PERL, "*.pm")), max_chars)


def polish_man(max_chars=6_000_000):
    return _spread(_man_pages(["pl"]), max_chars)


def go_src(max_chars=20_000_000):
    """Go's standard library and tools (Debian's golang-1.19-src): its ASCII .go files, sorted."""
    _need(GO / "fmt" / "print.go", "golang-1.19-src")
    return _cut(list(_ascii_files(GO, "*.go")), max_chars)


def spanish_man(max_chars=1_500_000):
    return _spread(_man_pages(["es"]), max_chars)


def tcl_lib(max_chars=1_500_000):
    """Tcl's and Tk's script libraries (libtcl8.6, libtk8.6): their ASCII .tcl files, sorted."""
    _need(TCL / "tcl8.6" / "init.tcl", "libtcl8.6")
    _need(TCL / "tk8.6" / "tk.tcl", "libtk8.6")
    return _cut(list(_ascii_files(TCL, "*.tcl")), max_chars)


def _ascii_files(root, pattern):
    """The text of every ASCII file matching `pattern` under `root`, sorted by path."""
    for path in sorted(root.rglob(pattern)):
        try:
            yield path.read_bytes().decode("ascii")
        except (OSError, UnicodeDecodeError):
            continue


def c_headers(max_chars=20_000_000, root=Path("/usr/include")):
    """The ASCII C headers under /usr/include, sorted by path, the first max_chars of them."""
    _need(root / "stdio.h", "libc6-dev")
    parts, total = [], 0
    for text in _ascii_files(root, "*.h"):
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return _cut(parts, max_chars)


CORPORA = {"fortunes-100k": fortunes_en, "russian-2m": russian, "pydocs-10m": pydocs,
           "pycode-50m": pycode, "fortunes-1m": fortunes_1m}
HELDOUT = {"pycode-heldout": pycode_heldout}       # texts to measure runs on, not to train
JUDGES = {"cjk-man": cjk_man, "french-man": french_man, "c-headers": c_headers,  # held out
          "cjk-docs": cjk_docs, "german-man": german_man, "russian-man": russian_man,
          "perl-lib": perl_lib, "polish-man": polish_man, "go-src": go_src,
          "spanish-man": spanish_man, "tcl-lib": tcl_lib}
# Built to settle one rule, after the verdicts above: neither fit nor judge (RESULTS.md, "Two
# layers on a large vocabulary").
RULES = {"fortunes-zh": chinese_fortunes}
NAMES = {**CORPORA, **HELDOUT, **JUDGES, **RULES}              # every corpus build() makes


def fingerprint(path):
    """A built text's identity, recorded with every run on it: two machines with other package
    versions build other texts (pycode-50m reads this interpreter's site-packages), and a fit or
    a comparison must not mix runs on two texts under one name."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def build(name, out=DEFAULT_OUT):
    """The path of corpus `name` under `out`, built if it is not there yet."""
    path = Path(out) / f"{name}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = NAMES[name]()
        if not text.strip():
            raise SystemExit(f"{name}: its files gave no text; reinstall its package "
                             "(python benchmarks/corpora.py --install)")
        tmp = path.with_suffix(f".tmp{os.getpid()}")    # two builders never share one
        tmp.write_text(text, "utf-8")
        tmp.replace(path)
    return path


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"the folder the corpora are built in (default {DEFAULT_OUT})")
    ap.add_argument("--install", action="store_true",
                    help="apt-get install the Debian packages the corpora come from")
    ap.add_argument("names", nargs="*", default=list(CORPORA) + list(JUDGES) + list(RULES),
                    help="the corpora to build (default: all but pycode-heldout)")
    a = ap.parse_args()
    unknown = [name for name in a.names if name not in NAMES]
    if unknown:
        ap.error(f"no corpus named {unknown[0]!r} (one of {', '.join(NAMES)})")
    try:
        a.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"--out {a.out}: cannot make that folder ({e.strerror})")
    if a.install:
        code = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                               *PACKAGES]).returncode
        if code:
            raise SystemExit(f"corpora.py --install: apt-get install stopped (exit status "
                             f"{code}, said above); run it as root")
    for name in a.names:
        path = build(name, a.out)
        text = path.read_text("utf-8")
        print(f"{name}: {len(text):,} chars, {len(set(text))} symbols  {path}")


if __name__ == "__main__":
    main()
