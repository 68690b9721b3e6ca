"""Build the bundled technical-documentation sample ``data/corpus/docs/`` (real text, planted junk).

Source: the message catalogs of GNU coreutils 9.1 (Debian package ``coreutils 9.1-1``,
``/usr/share/locale/<lang>/LC_MESSAGES/coreutils.mo``, GPL-3.0-or-later): the ``--help`` texts of
the core utilities in 40+ languages, and their English originals (the catalog keys). They are
command documentation: option tables (``-a, --all``), paths, numbers, format strings: exactly what
web heuristics mistake for junk. Catalogs of languages outside the 75 (Esperanto, Irish,
Interlingua) supply ``lang_not_in_set`` junk.

Output (deterministic: fixed seed, gzip mtime 0)::

    data/corpus/docs/01-coreutils-a.jsonl       originals (first half of the languages), in-file duplicates, junk
    data/corpus/docs/02-coreutils-b.jsonl.gz    originals (second half), copies of file 01's documents, junk
    data/corpus/docs/03-junk-malformed.jsonl    junk of every kind, malformed lines
    data/corpus/docs_truth.jsonl                one row per record (same keys as data/corpus/truth.jsonl)
    data/corpus/docs_build_info.json            source catalogs (sha256), outputs (sha256, bytes), counts

``docs/`` holds only input files, so ``--input data/corpus/docs`` reads exactly the sample.

Usage::

    python data/build_docs_sample.py            # build (needs the catalogs of the coreutils package)
    python data/build_docs_sample.py --check    # rebuild into a temp dir and compare with data/corpus/docs
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import gettext
import gzip
import hashlib
import json
import random
import re
import sys
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

SEED = 20240729
DATA_DIR = Path(__file__).resolve().parent
OUT_DIR = DATA_DIR / "corpus" / "docs"
LOCALE = Path("/usr/share/locale")
CATALOG = "coreutils.mo"
SOURCE = "coreutils"
PER_LANG = 7
MIN_CHARS, MAX_CHARS = 300, 2500
# catalog locale -> mGTE code (pt_BR, zh_TW left out: one catalog per language)
LANGS = {"af": "af", "be": "be", "bg": "bg", "ca": "ca", "cs": "cs", "da": "da", "de": "de", "el": "el",
         "es": "es", "et": "et", "eu": "eu", "fi": "fi", "fr": "fr", "gl": "gl", "hr": "hr", "hu": "hu",
         "id": "id", "it": "it", "ja": "ja", "kk": "kk", "ko": "ko", "lt": "lt", "ms": "ms", "nb": "no",
         "nl": "nl", "pl": "pl", "pt": "pt", "ro": "ro", "ru": "ru", "sk": "sk", "sl": "sl", "sr": "sr",
         "sv": "sv", "tr": "tr", "uk": "uk", "vi": "vi", "zh_CN": "zh"}
OUT_OF_SET = {"eo": "Esperanto", "ga": "Irish", "ia": "Interlingua"}
NO_SPACE = {"zh", "ja"}
_WORD = re.compile(r"\w+")


def catalog(locale: str) -> dict[str, str]:
    path = LOCALE / locale / "LC_MESSAGES" / CATALOG
    with open(path, "rb") as fh:
        cat = gettext.GNUTranslations(fh)._catalog
    return {k: v for k, v in cat.items() if isinstance(k, str) and k and isinstance(v, str) and v != k}


def shingles(text: str, lang: str) -> set[str]:
    if lang in NO_SPACE:
        chars = "".join(text.split())
        return {chars[i:i + 5] for i in range(max(1, len(chars) - 4))}
    words = _WORD.findall(text.lower())
    return {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}


def jaccard(a: str, b: str, lang: str) -> float:
    x, y = shingles(a, lang), shingles(b, lang)
    return len(x & y) / max(1, len(x | y))


def clean(text: str) -> str:
    return text.strip("\n")


def pick_docs(texts: list[tuple[str, str]], lang: str, k: int, rng: random.Random) -> list[tuple[str, str]]:
    """``k`` (msgid, text) of MIN..MAX chars, no two with a 5-gram Jaccard >= 0.5."""
    pool = sorted((m, clean(t)) for m, t in texts if MIN_CHARS <= len(clean(t)) <= MAX_CHARS)
    rng.shuffle(pool)
    chosen: list[tuple[str, str]] = []
    for m, t in pool:
        if all(jaccard(t, c, lang) < 0.5 for _, c in chosen):
            chosen.append((m, t))
        if len(chosen) == k:
            break
    return chosen


def near_copy(text: str, lang: str, rng: random.Random) -> tuple[str, float]:
    """Clustered substitutions/deletions (3-6 % of the words, characters for zh/ja) until the
    5-gram Jaccard to the original is in [0.70, 0.95]."""
    for _ in range(200):
        if lang in NO_SPACE:
            units, joiner = list(text), ""
        else:
            units, joiner = text.split(" "), " "
        n_edit = max(2, int(len(units) * rng.uniform(0.03, 0.06)))
        start = rng.randrange(0, max(1, len(units) - n_edit))
        for i in range(start, min(len(units), start + n_edit)):
            if rng.random() < 0.5:
                units[i] = ""
            else:
                units[i] = units[rng.randrange(len(units))]
        copy = joiner.join(u for u in units if u != "" or joiner == "")
        sim = jaccard(text, copy, lang)
        if 0.70 <= sim <= 0.95:
            return copy, round(sim, 3)
    raise RuntimeError("no near copy in [0.70, 0.95]")


MENUS = ["Home | Downloads | Documentation | Mailing lists | Bug reports | Contact | Privacy policy",
         "Startseite | Handbuch | Herunterladen | Neuigkeiten | Kontakt | Impressum | Datenschutz",
         "Accueil | Documentation | Téléchargements | Actualités | Contact | Mentions légales",
         "Главная | Документация | Загрузки | Новости | Контакты | Политика конфиденциальности",
         "首页 | 文档 | 下载 | 新闻 | 联系我们 | 隐私政策 | 网站地图",
         "ホーム | ドキュメント | ダウンロード | ニュース | お問い合わせ | プライバシーポリシー"]
SPAM = ["download coreutils free crack keygen full version", "最新 下载 免费 破解 版本 点击 进入"]
# Pages with no body (issue 26): what a crawl of rendered manual pages keeps of a page whose body
# failed to extract: the man page's running head ("LS(1)  User Commands  LS(1)", in the section
# names of man-db's translations) and foot (package, version, date, page name), GNU Info
# navigation lines, and consent banners. (lang, command, section name, date)
MAN_HEADS = [("en", "ls", "User Commands", "September 2022"),
             ("de", "sort", "Dienstprogramme für Benutzer", "September 2022"),
             ("fr", "date", "Commandes de l'utilisateur", "septembre 2022"),
             ("ru", "du", "Пользовательские команды", "сентябрь 2022"),
             ("ja", "wc", "ユーザーコマンド", "2022年9月"),
             ("zh", "cp", "用户命令", "2022年9月"),
             ("pl", "head", "Polecenia użytkownika", "wrzesień 2022")]
BANNERS = ["Next: ls invocation, Previous: dir invocation, Up: Directory listing   [Contents][Index]\n"
           "Skip to main content\nTable of contents\nPrevious page\nNext page\nBack to top",
           "Weiter: Aufruf von ls, Zurück: Aufruf von dir, Nach oben: Verzeichnisse auflisten   [Inhalt][Index]\n"
           "Zum Hauptinhalt springen\nInhaltsverzeichnis\nVorherige Seite\nNächste Seite\nNach oben",
           "Далее: Вызов ls, Назад: Вызов dir, Вверх: Вывод содержимого каталогов   [Содержание][Указатель]\n"
           "Перейти к основному содержимому\nОглавление\nПредыдущая страница\nСледующая страница\nНаверх",
           "当サイトではクッキーを使用しています。\n同意する\n拒否\n設定\n前のページ\n次のページ\nトップ",
           "التالي: استدعاء ls، السابق: استدعاء dir، أعلى: سرد الأدلة   [المحتويات][فهرس]\n"
           "يستخدم هذا الموقع ملفات تعريف الارتباط\nقبول الكل\nرفض\nالإعدادات\nالصفحة الرئيسية"]


def junk_records(rng: random.Random, cats: dict[str, dict[str, str]], short: list[tuple[str, str]]) -> list[dict]:
    """Every junk kind: (text, junk_type, note)."""
    out = []

    def add(text, kind, note):
        out.append({"text": text, "junk_type": kind, "note": note})

    for m in MENUS:
        add(m, "boilerplate", "navigation menu")
    add("We use cookies to improve your experience. By using this site you accept our cookie policy.\n"
        "Accept all cookies | Reject | Settings | Privacy policy", "boilerplate", "cookie notice")
    for loc in ("de", "fr", "ru"):
        line = sorted(t for t in cats[loc].values() if 40 <= len(t) <= 90 and "\n" not in t)[7]
        add("\n".join([line] * 20), "repeated_lines", f"one real {loc} catalog line repeated 20 times")
    for s in SPAM:
        add(" ".join([s] * 25), "repeated_ngrams", "one phrase repeated")
    add("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
        "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.", "lorem_ipsum",
        "placeholder text")
    symbols = "¶±™§©®°•¤¦¬µ{}[]<>|\\/~^`@#$%&*+=_;:!?()"
    for i in range(2):
        add(" ".join("".join(rng.choice(symbols + "0123456789") for _ in range(rng.randint(3, 9)))
                     for _ in range(120)), "byte_noise", "random symbols")
        add(" ".join(f"{rng.randrange(256):02x}" for _ in range(400)), "byte_noise", "hex dump")
        add(bytes(rng.randrange(256) for _ in range(1200)).decode("utf-8", "replace"), "byte_noise",
            "random bytes decoded as UTF-8 with replacement")
        add(bytes(rng.randrange(32, 256) for _ in range(1200)).decode("cp1252", "replace"), "byte_noise",
            "random bytes decoded as cp1252 (mojibake)")
        add("\n".join(base64.b64encode(bytes(rng.randrange(256) for _ in range(57))).decode() for _ in range(20)),
            "byte_noise", "base64 blob")
    add('<script>var _paq = window._paq || []; _paq.push(["trackPageView"]);</script><div class="nav"><ul>'
        '<li><a href="/">Home</a></li><li><a href="/manual/">Manual</a></li></ul></div><div id="footer"></div>',
        "markup", "tracking script and navigation markup")
    add("<html><head><meta charset=\"utf-8\"><title></title></head><body><table><tr><td></td><td></td></tr>"
        "</table></body></html>", "markup", "empty HTML page")
    for loc, text in short:
        add(text, "too_short", f"a short real {loc} catalog string")
    add("", "empty_text", "empty")
    add("  \n\t \n", "empty_text", "whitespace only")
    for loc, name in OUT_OF_SET.items():
        texts = pick_docs(list(cats[loc].items()), "xx", 2, rng)
        for _, t in texts:
            add(t, "lang_not_in_set", f"real {name} catalog text (not an mGTE language)")
    for lang, cmd, section, date in MAN_HEADS:  # added by issue 26: appended, so earlier records keep their lines
        page = f"{cmd.upper()}(1)"
        add(f"{page}{' ' * 20}{section}{' ' * 20}{page}\n\n\n\nGNU coreutils 9.1{' ' * 16}{date}{' ' * 16}{page}",
            "no_body", f"a {lang} man page's running head and foot only")
    for text in BANNERS:
        add(text, "no_body", "navigation and consent banners only")
    return out


MALFORMED = [
    (b'{"id": "bad-json", "text": "unterminated\n', "bad JSON"),
    (b'{"id": "no-text", "body": "the text field is missing"}\n', "missing text"),
    (b'{"id": "int-text", "text": 42}\n', "text is an int"),
    (b'{"id": "null-text", "text": null}\n', "text is null"),
    (b'{"id": "list-text", "text": ["a", "b"]}\n', "text is a list"),
    (b'{"id": "bad-utf8", "text": "caf\xe9 au lait \xff\xfe"}\n', "invalid UTF-8 bytes"),
    (b'["an", "array", "line"]\n', "a JSON array"),
    (b'{"id": "trailing", "text": "x"} garbage\n', "trailing garbage"),
]


def write_jsonl(path: Path, rows: list[dict | bytes]) -> None:
    data = b"".join(r if isinstance(r, bytes) else (json.dumps(r, ensure_ascii=False) + "\n").encode() for r in rows)
    if path.suffix == ".gz":
        with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
            gz.write(data)
    else:
        path.write_bytes(data)


def truth_row(file, line, rec_id, lang, kind, outcome, **extra) -> dict:
    row = {"file": file, "line": line, "row": None, "scope": "record", "id": rec_id, "expected_lang": lang,
           "kind": kind, "expected_outcome": outcome, "dup_of": None, "dup_of_ref": None, "similarity": None,
           "shingle": None, "variant": None, "junk_type": None, "source": SOURCE, "note": "real text"}
    row.update(extra)
    return row


def build(out_dir: Path) -> dict:
    rng = random.Random(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    cats = {loc: catalog(loc) for loc in [*LANGS, *OUT_OF_SET]}
    english = {m: m for m in cats["de"]}  # the catalog keys are the English originals
    docs: dict[str, list[tuple[str, str]]] = {"en": pick_docs(list(english.items()), "en", PER_LANG, rng)}
    for loc, lang in LANGS.items():
        docs[lang] = pick_docs(list(cats[loc].items()), lang, PER_LANG, rng)
    langs = sorted(docs)
    halves = (langs[: len(langs) // 2], langs[len(langs) // 2:])
    files = ("01-coreutils-a.jsonl", "02-coreutils-b.jsonl.gz", "03-junk-malformed.jsonl")
    records: dict[str, list] = {f: [] for f in files}
    truth: dict[str, list] = {f: [] for f in files}
    originals: list[tuple[str, str, str, str]] = []  # (file, id, lang, text)

    def emit(file, rec, t):
        records[file].append(rec)
        truth[file].append(t)
        return len(records[file])

    for file, half in zip(files[:2], halves):
        items = [(lang, i, m, t) for lang in half for i, (m, t) in enumerate(docs[lang])]
        rng.shuffle(items)
        for lang, i, m, t in items:
            rec_id = f"coreutils-{lang}-{hashlib.sha1(m.encode()).hexdigest()[:8]}"
            line = emit(file, {"id": rec_id, "text": t, "source": SOURCE, "msgid_sha1": hashlib.sha1(m.encode()).hexdigest()},
                        truth_row(file, 0, rec_id, lang, "original", "kept"))
            truth[file][-1]["line"] = line
            originals.append((file, rec_id, lang, t, line))
    # duplicates: exact (identical / whitespace / NFD) and near, within file 01 and from 01 into 02
    dup_rng = random.Random(SEED + 1)
    pool = sorted(originals, key=lambda o: o[1])
    picks = dup_rng.sample(pool, 36)
    for j, (ofile, oid, lang, text, oline) in enumerate(picks):
        target = files[1] if ofile == files[0] and j % 2 else ofile
        if j < 16:
            variant = ("identical", "whitespace", "nfd", "identical")[j % 4]
            dup = {"identical": text, "whitespace": "  " + text.replace("\n", "\n\n").replace(" ", "  ") + "\n ",
                   "nfd": unicodedata.normalize("NFD", text)}[variant]
            emit(target, {"id": f"{oid}-copy{j}", "text": dup, "source": SOURCE},
                 truth_row(target, len(records[target]) + 1, f"{oid}-copy{j}", lang, "exact_duplicate", "dropped",
                           dup_of=oid, dup_of_ref=f"{ofile}:{oline}", variant=variant, note="planted exact copy"))
        else:
            dup, sim = near_copy(text, lang, dup_rng)
            emit(target, {"id": f"{oid}-near{j}", "text": dup, "source": SOURCE},
                 truth_row(target, len(records[target]) + 1, f"{oid}-near{j}", lang, "near_duplicate", "dropped",
                           dup_of=oid, dup_of_ref=f"{ofile}:{oline}", similarity=sim,
                           shingle="char5" if lang in NO_SPACE else "word5", variant="edited",
                           note="planted near copy"))
    # junk: most in file 03, a few in 01/02; malformed lines in 03
    short = [(loc, t) for loc in ("de", "ja", "es", "ru", "zh_CN", "fr")
             for t in [sorted(x for x in cats[loc].values() if 8 <= len(x) <= 30 and "%" not in x)[3]]]
    junk = junk_records(random.Random(SEED + 2), cats, short)
    for k, j in enumerate(junk):
        target = files[k % 5] if k % 5 < 2 else files[2]
        rid = f"junk-{k:02d}"
        emit(target, {"id": rid, "text": j["text"], "source": SOURCE},
             truth_row(target, len(records[target]) + 1, rid, None, "junk", "dropped", junk_type=j["junk_type"],
                       note=j["note"]))
    for k, (raw, note) in enumerate(MALFORMED):
        at = 3 + 2 * k
        records[files[2]].insert(at, raw)
        truth[files[2]].insert(at, truth_row(files[2], 0, None, None, "malformed", "quarantined", note=note))
    for i, t in enumerate(truth[files[2]], 1):
        t["line"] = i
    for f in files:
        write_jsonl(out_dir / f, records[f])
    rows = [t for f in files for t in truth[f]]
    (out_dir.parent / f"{out_dir.name}_truth.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in rows))
    info = {"seed": SEED, "source": "GNU coreutils 9.1 message catalogs (Debian coreutils 9.1-1), GPL-3.0-or-later",
            "catalogs": {loc: hashlib.sha256((LOCALE / loc / "LC_MESSAGES" / CATALOG).read_bytes()).hexdigest()
                         for loc in sorted([*LANGS, *OUT_OF_SET])},
            "outputs": {f: {"bytes": (out_dir / f).stat().st_size,
                            "sha256": hashlib.sha256((out_dir / f).read_bytes()).hexdigest()}
                        for f in files},
            "truth_sha256": hashlib.sha256((out_dir.parent / f"{out_dir.name}_truth.jsonl").read_bytes()).hexdigest(),
            "counts": {"kind": dict(sorted(Counter(t["kind"] for t in rows).items())),
                       "junk_type": dict(sorted(Counter(t["junk_type"] for t in rows if t["junk_type"]).items())),
                       "languages": len({t["expected_lang"] for t in rows if t["kind"] == "original"})}}
    (out_dir.parent / f"{out_dir.name}_build_info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare")
    args = ap.parse_args(argv)
    if not args.check:
        print(json.dumps(build(OUT_DIR)["counts"]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp) / OUT_DIR.name)
        names = sorted(p.name for p in OUT_DIR.iterdir())
        _, mismatch, errors = filecmp.cmpfiles(OUT_DIR, Path(tmp) / OUT_DIR.name, names, shallow=False)
        for extra in ("truth.jsonl", "build_info.json"):
            if not filecmp.cmp(OUT_DIR.parent / f"{OUT_DIR.name}_{extra}", Path(tmp) / f"{OUT_DIR.name}_{extra}",
                               shallow=False):
                mismatch.append(f"{OUT_DIR.name}_{extra}")
    if mismatch or errors:
        print(f"differs from data/corpus/docs: {mismatch + errors}", file=sys.stderr)
        return 1
    print("data/corpus/docs is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
