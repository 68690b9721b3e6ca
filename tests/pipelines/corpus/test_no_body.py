"""The curated profile's `curated_no_body` rule (issue 26): pages that are nothing but running
heads and feet, version/date stamps, navigation and consent banners are dropped, in several
languages and scripts; short but real documents are kept."""

import pytest

from pipelines.corpus.config import CuratedQuality, QualityConfig
from pipelines.corpus.curated import body_word_count
from pipelines.corpus.quality import QualityFilters

PAD = " " * 16


def man(page: str, section: str, date: str) -> str:
    """A rendered man page with its body lost: the running head and the running foot."""
    return f"{page}{PAD}{section}{PAD}{page}\n\n\n\nGNU coreutils 9.1{PAD}{date}{PAD}{page}"


NO_BODY = [
    ("en", man("LS(1)", "User Commands", "September 2022")),
    ("de", man("SORT(1)", "Dienstprogramme für Benutzer", "September 2022")),
    ("ru", man("DU(1)", "Пользовательские команды", "сентябрь 2022")),  # Cyrillic
    ("ja", man("WC(1)", "ユーザーコマンド", "2022年9月")),  # no spaces: kana
    ("zh", man("CP(1)", "用户命令", "2022年9月")),  # Han
    ("ar", man("LS(1)", "أوامر المستخدم", "سبتمبر 2022")),  # Arabic, right to left
    ("he", man("LS(1)", "פקודות משתמש", "ספטמבר 2022")),  # Hebrew
    ("en", "Next: ls invocation, Previous: dir invocation, Up: Directory listing   [Contents][Index]\n"
           "Skip to main content\nTable of contents\nPrevious page\nNext page\nBack to top"),
    ("de", "Weiter: Aufruf von ls, Zurück: Aufruf von dir, Nach oben: Verzeichnisse auflisten   [Inhalt][Index]\n"
           "Zum Hauptinhalt springen\nInhaltsverzeichnis\nVorherige Seite\nNächste Seite\nNach oben"),
    ("ru", "Далее: Вызов ls, Назад: Вызов dir, Вверх: Вывод содержимого каталогов   [Содержание][Указатель]\n"
           "Перейти к основному содержимому\nОглавление\nПредыдущая страница\nСледующая страница\nНаверх"),
    ("ar", "التالي: استدعاء ls، السابق: استدعاء dir، أعلى: سرد الأدلة   [المحتويات][فهرس]\n"
           "الصفحة الرئيسية\nالمحتويات\nبحث\nتسجيل الدخول\nالإعدادات"),
    ("hi", "अगला: ls का उपयोग, पिछला: dir का उपयोग, ऊपर: निर्देशिका सूची\nमुखपृष्ठ\nसामग्री\nखोज\nलॉग इन\nसेटिंग्स"),
    ("zh", "上一页：目录列表\n下一页：ls 调用\n返回首页\n跳到主要内容\n搜索\n登录"),
]

KEEP = [
    ("en", "true - do nothing, successfully\nUsage: true [ignored command line arguments]\n  or:  true OPTION\n"
           "Exit with a status code indicating success."),
    ("en", man("LS(1)", "User Commands", "September 2022").replace(
        "\n\n\n\n", "\n\nNAME\n       ls - list directory contents\n\nDESCRIPTION\n       List information about the"
                    " FILEs (the current directory by default).\n\n")),  # head + a short body + foot
    ("ru", "Использование: sleep ЧИСЛО[СУФФИКС]…\nПриостанавливает работу на ЧИСЛО секунд.\n"
           "Версия 9.1, сентябрь 2022"),
    ("ja", "使い方: sleep NUMBER[SUFFIX]...\nNUMBER 秒間停止します。\nバージョン 9.1 (2022年9月)"),
    ("zh", "用法：sleep 数字[后缀]...\n暂停指定的秒数。\n版本 9.1，2022年9月"),
    ("ja", "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。"),  # one token, one line
    ("ar", "الاستخدام: sleep رقم\nيتوقف البرنامج لمدة الرقم المحدد من الثواني قبل أن يتابع العمل.\nالإصدار 9.1"),
    ("de", "Weiter geht es im nächsten Kapitel mit der Frage, wie man Dateien sortiert und dabei Leerzeichen ignoriert."),
    ("en", "Release notes\nVersion 9.1 (September 2022)\nThe ls command now quotes file names with spaces by default."),
]


# a lower length floor than the profile's, so that every page here reaches the no-body rule (the
# Chinese and Japanese heads are shorter than the profile's 20 characters and dropped as too short)
LOW_FLOOR = QualityConfig(curated=CuratedQuality(min_words=5, min_words_no_space=10))


@pytest.mark.parametrize("lang,text", NO_BODY, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(NO_BODY)])
def test_pages_without_a_body_are_dropped(lang, text):
    reason, scores = QualityFilters(LOW_FLOOR).score(text, lang, profile="curated")
    assert reason == "curated_no_body", (reason, scores)
    assert scores["statistic"] == "no_body" and scores["value"] < scores["threshold"] and scores["bound"] == "min"


@pytest.mark.parametrize("lang,text", KEEP, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(KEEP)])
def test_short_real_documents_are_kept(lang, text):
    reason, scores = QualityFilters(LOW_FLOOR).score(text, lang, profile="curated")
    assert reason is None, (reason, scores)


def test_the_body_is_what_is_left_of_the_page():
    head_foot = man("LS(1)", "User Commands", "September 2022")
    assert body_word_count(head_foot, no_space=False) == 0
    body = "List information about the FILEs (the current directory by default)."
    assert body_word_count(head_foot.replace("\n\n\n\n", f"\n\n{body}\n\n"), no_space=False) == len(body.split())
    # the threshold is a setting: at 0 the rule never fires
    off = QualityConfig(curated=CuratedQuality(min_body_words=0, min_body_words_no_space=0))
    assert QualityFilters(off).score(head_foot, "en", profile="curated")[0] is None
