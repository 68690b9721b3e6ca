"""The ``curated`` quality profile: junk rules only, for trusted sources.

Web heuristics read documentation as junk: command options, paths and numbers are not
alphabetic words (Gopher's alpha threshold), code examples hold curly brackets (C4), option
tables repeat phrases (Gopher's duplicated n-grams). This profile keeps only the rules that catch
junk whatever the source: too short / too long, byte noise, boilerplate-only text, text with no
body (nothing but running heads and feet, version/date stamps, navigation and consent banners),
markup-only text, lorem ipsum, one line or paragraph repeated (datatrove's Gopher repetition filter on lines
and paragraphs) and one phrase repeated over half the text.

Each rule is a statistic and a threshold; :func:`curated_verdict` returns the first failing rule
with both, so the dropped table shows why (``{"statistic": .., "value": .., "threshold": ..}``).
"""

from __future__ import annotations

import unicodedata
from collections import Counter

import regex
from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter

from pipelines.corpus.config import CuratedQuality, GopherRepetition
from pipelines.corpus.quality_stats import repetition_statistic

_LETTER = regex.compile(r"[\p{L}\p{M}]")
_HEX_TOKEN = regex.compile(r"[0-9A-Fa-f]+[,.;:]?")
_TWO_LETTERS = regex.compile(r"\p{L}\p{M}*\p{L}")
# a navigation menu: >= 3 spaced separators between short items ("Home | News | Contact | ...")
_MENU_SEP = regex.compile(r"\s[|»›>•·/]\s")
_POLICY = regex.compile(
    r"cookie|privacy policy|terms of (use|service)|all rights reserved|subscribe to our|sign up for our|"
    r"datenschutz|impressum|mentions légales|politique de confidentialité|política de privacidad|"
    r"политика конфиденциальности|隐私政策|プライバシーポリシー|クッキー|ملفات تعريف الارتباط|עוגיות|कुकीज़",
    regex.IGNORECASE)
# words of navigation bars, link lists and consent banners, in the languages of the bundled samples
# scripts: a line made mostly of them is chrome, not body text ("Next: ls invocation, Previous:
# dir invocation, Up: Directory listing [Contents][Index]", "Skip to main content", "Accept all")
_BANNER_WORDS = frozenset("""
next previous prev up top home back contents content index search menu skip main navigation nav
sign log login logout register account share print download accept reject decline allow settings
preferences manage close ok got agree continue read page pages section chapter table toc edit
view source history permalink help feedback follow subscribe newsletter rss
weiter zurück oben nächste vorherige startseite inhalt inhaltsverzeichnis suche suchen anmelden abmelden akzeptieren ablehnen
alle einstellungen drucken teilen seite kapitel hauptinhalt springen
suivant précédent haut accueil sommaire rechercher connexion déconnexion accepter refuser paramètres
imprimer partager contenu principal page chapitre table matières
siguiente anterior arriba inicio contenido índice buscar iniciar sesión aceptar rechazar configuración
imprimir compartir página capítulo principal
successivo precedente indice cerca accedi accetta rifiuta tutto impostazioni stampa condividi pagina
próximo próxima voltar início conteúdo pesquisar entrar aceitar recusar configurações
volgende vorige omhoog inhoud zoeken inloggen accepteren weigeren instellingen
następna poprzednia góra strona główna spis treści szukaj zaloguj akceptuj odrzuć wszystkie ustawienia
далее назад вверх главная содержание оглавление поиск вход выход войти принять отклонить настройки
следующая предыдущая страница наверх глава печать поделиться перейти к основному содержимому
далі назад вгору головна зміст пошук увійти прийняти відхилити налаштування наступна попередня сторінка
sonraki önceki yukarı ana sayfa içindekiler giriş kabul reddet ayarlar
tiếp theo trước lên trang chủ mục lục tìm kiếm đăng nhập chấp nhận từ chối cài đặt
التالي السابق أعلى الرئيسية الصفحة المحتويات فهرس بحث تسجيل الدخول الخروج قبول رفض الإعدادات طباعة مشاركة
הבא הקודם למעלה דף הבית תוכן עניינים חיפוש התחברות אישור דחייה הגדרות
अगला पिछला ऊपर मुखपृष्ठ होम सामग्री अनुक्रमणिका खोज लॉग इन स्वीकार अस्वीकार सेटिंग्स
""".split())
# the same for scripts without spaces: a line whose non-space characters these cover for the most part
_BANNER_NO_SPACE = regex.compile(
    r"上一页|下一页|上一篇|下一篇|首页|主页|目录|返回|顶部|搜索|登录|注册|接受|拒绝|全部|设置|打印|分享|跳到主要内容|"
    r"前へ|次へ|前のページ|次のページ|ホーム|トップ|目次|索引|検索|ログイン|ログアウト|同意する|拒否|すべて|設定|印刷|共有|"
    r"メインコンテンツへ|スキップ|ถัดไป|ก่อนหน้า|หน้าแรก|สารบัญ|ค้นหา|เข้าสู่ระบบ|ยอมรับ|ปฏิเสธ|ทั้งหมด|ตั้งค่า")
# a version or a date stamp: "9.1", "v2.3.4", "2022-09-24", "September 2022", "2022年9月"
_STAMP = regex.compile(r"(?<![\p{L}\d])v?\d+(?:\.\d+)+(?![\p{L}\d])|(?<!\d)(?:19|20)\d\d(?!\d)")
_SENTENCE_END = regex.compile(r"[.!?。！？؟।]\s*$")
_TAG = regex.compile(r"<script\b.*?</script>|<style\b.*?</style>|<[A-Za-z/!][^<>]*>", regex.DOTALL | regex.IGNORECASE)
_BAD_CATEGORIES = {"Co", "Cn", "Cs", "Cc"}


def _is_menu_line(line: str) -> bool:
    parts = _MENU_SEP.split(f" {line.strip()} ")
    return len(parts) >= 4 and all(len(p.split()) <= 5 for p in parts)


def boilerplate_word_ratio(text: str) -> float:
    """Share of the text's whitespace words that sit in navigation-menu or cookie/privacy lines."""
    total = bp = 0
    for line in text.split("\n"):
        n = len(line.split())
        total += n
        if n and (_is_menu_line(line) or _POLICY.search(line)):
            bp += n
    return bp / total if total else 0.0


_LABEL = regex.compile(r"([\p{L}\p{M}]+)\s*[:：]")


def _banner_share(line: str, no_space: bool) -> float:
    """Share of a line that is navigation or banner vocabulary (words; characters without spaces);
    1.0 for a GNU Info-style navigation line (two or more labels such as ``Next:``, ``Up:``)."""
    if sum(m.lower() in _BANNER_WORDS for m in _LABEL.findall(line)) >= 2:
        return 1.0
    if no_space:
        chars = sum(1 for c in line if not c.isspace() and not unicodedata.category(c).startswith("P"))
        covered = sum(len(m) for m in _BANNER_NO_SPACE.findall(line))
        return covered / chars if chars else 0.0
    words = [w for w in regex.findall(r"[\p{L}\p{M}]+", line.lower())]
    return sum(w in _BANNER_WORDS for w in words) / len(words) if words else 0.0


def body_word_count(text: str, no_space: bool, max_head_words: int = 12) -> int:
    """Whitespace words (non-space characters for scripts without spaces) of the text's body lines.

    A non-empty line is *not* body when it is a navigation-menu or cookie/privacy line (as in
    :func:`boilerplate_word_ratio`), mostly banner vocabulary (:data:`_BANNER_WORDS`), or a
    running head/foot: a short line (<= ``max_head_words`` words) that starts with the token
    another line (or itself) ends with ("LS(1)  User Commands  LS(1)" ... "GNU coreutils 9.1
    September 2022  LS(1)"), or a short line with a version or date stamp and no sentence end.
    """
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    lasts = Counter(line.split()[-1] for line in lines)
    total = 0
    for line in lines:
        tokens = line.split()
        first = tokens[0]
        # another line ends with this line's first token, or the line starts and ends with it
        running = lasts[first] - (tokens[-1] == first) > 0 or (len(tokens) > 1 and tokens[-1] == first)
        size = sum(1 for c in line if not c.isspace()) if no_space else len(tokens)
        short = len(tokens) <= max_head_words and (not no_space or size <= 4 * max_head_words)
        if _is_menu_line(line) or _POLICY.search(line) or _banner_share(line, no_space) >= 0.5:
            continue
        if short and running and _LETTER.search(first):
            continue
        if short and _STAMP.search(line) and not _SENTENCE_END.search(line):
            continue
        total += size
    return total


def noise_statistics(text: str) -> dict[str, float]:
    """Byte-noise statistics of a text."""
    chars = [c for c in text if not c.isspace()]
    n = max(1, len(chars))
    tokens = text.split()
    wordlike = sum(1 for t in tokens if _TWO_LETTERS.search(t) and not _HEX_TOKEN.fullmatch(t))
    bad = sum(1 for c in chars if c == "\ufffd" or unicodedata.category(c) in _BAD_CATEGORIES)
    return {"letter_ratio": sum(1 for c in chars if _LETTER.match(c)) / n,
            "word_token_ratio": wordlike / max(1, len(tokens)),
            "bad_char_ratio": bad / n,
            "mean_token_chars": len(chars) / max(1, len(tokens))}


def _failed(statistic: str, value: float, threshold: float, direction: str) -> tuple[str, dict]:
    return f"curated_{statistic}", {"statistic": statistic, "value": round(float(value), 4),
                                    "threshold": threshold, "bound": direction}


def _repetition_filter(r: GopherRepetition, language) -> GopherRepetitionFilter:
    return GopherRepetitionFilter(dup_line_frac=r.dup_line_frac, dup_para_frac=r.dup_para_frac,
                                  dup_line_char_frac=r.dup_line_char_frac, dup_para_char_frac=r.dup_para_char_frac,
                                  top_n_grams=(), dup_n_grams=r.dup_n_grams, language=language)


class CuratedFilters:
    """The curated rules of one :class:`CuratedQuality`; ``tokenizer``: the quality tokenizer."""

    def __init__(self, cfg: CuratedQuality, tokenizer):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self._repetition = {False: _repetition_filter(cfg.repetition, tokenizer),
                            True: _repetition_filter(cfg.repetition_no_space, tokenizer)}

    def verdict(self, text: str, words: list[str], no_space: bool) -> tuple[str | None, dict]:
        """(None, {}) to keep, else (``curated_<statistic>``, the statistic and its threshold)."""
        c = self.cfg
        n_words = sum(1 for w in words if _LETTER.search(w) or w.isdigit())
        lo, hi = (c.min_words_no_space, c.max_words_no_space) if no_space else (c.min_words, c.max_words)
        if n_words < lo:
            return _failed("words", n_words, lo, "min")
        if n_words > hi:
            return _failed("words", n_words, hi, "max")
        noise = noise_statistics(text)
        for stat, threshold, bound in (("letter_ratio", c.min_letter_ratio, "min"),
                                       ("word_token_ratio", c.min_word_token_ratio, "min"),
                                       ("bad_char_ratio", c.max_bad_char_ratio, "max"),
                                       ("mean_token_chars", None if no_space else c.max_mean_token_chars, "max")):
            value = noise[stat]
            if threshold is not None and (value < threshold if bound == "min" else value > threshold):
                return _failed(stat, value, threshold, bound)
        bp = boilerplate_word_ratio(text)
        if bp > c.max_boilerplate_word_ratio:
            return _failed("boilerplate_word_ratio", bp, c.max_boilerplate_word_ratio, "max")
        body = body_word_count(text, no_space)
        min_body = c.min_body_words_no_space if no_space else c.min_body_words
        if body < min_body:
            return _failed("no_body", body, min_body, "min")
        markup = sum(len(m) for m in _TAG.findall(text)) / len(text)
        if markup > c.max_markup_char_ratio:
            return _failed("markup_char_ratio", markup, c.max_markup_char_ratio, "max")
        if c.lorem_ipsum and "lorem ipsum" in text.lower():
            return _failed("lorem_ipsum", 1, 0, "max")
        rep_cfg = c.repetition_no_space if no_space else c.repetition
        if rep_cfg.enabled:
            verdict = self._repetition[no_space].filter(Document(text=text, id=""))
            if verdict is not True:
                name = verdict[1]
                value, threshold = repetition_statistic(name, text, words, rep_cfg)
                return _failed(f"rep_{name}", value, threshold, "max")
        return None, {}
