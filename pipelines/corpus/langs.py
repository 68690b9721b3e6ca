"""The 75 mGTE languages (PAPER_FACTS.md) and the label maps of the language identifiers."""

MGTE_LANGS: tuple[str, ...] = tuple("""
af ar az be bg bn ca ceb cs cy da de el en es et eu fa fi fr gl gu he hi hr ht hu hy id is it ja jv ka kk
km kn ko ky lo lt lv mk ml mn mr ms my ne nl no pa pl pt qu ro ru si sk sl so sq sr sv sw ta te th tl tr
uk ur vi yo zh""".split())
assert len(MGTE_LANGS) == 75

# Scripts written without spaces between words.
NO_SPACE_LANGS: tuple[str, ...] = ("zh", "ja", "th", "km", "lo", "my")

# Identifier labels that are another name of an mGTE language (FT176 uses ISO 639-1 where it
# exists, some legacy codes; GlotLID uses ISO 639-3 + script).
ALIASES: dict[str, str] = {
    "zh-cn": "zh", "zh-tw": "zh", "zh_hans": "zh", "zh_hant": "zh", "wuu": None, "yue": None,
    "nb": "no", "nn": "no", "iw": "he", "in": "id", "fil": "tl", "jw": "jv", "mo": "ro",
}
ISO639_3: dict[str, str] = {
    "afr": "af", "arb": "ar", "ara": "ar", "azj": "az", "aze": "az", "bel": "be", "bul": "bg", "ben": "bn",
    "cat": "ca", "ceb": "ceb", "ces": "cs", "cym": "cy", "dan": "da", "deu": "de", "ell": "el", "eng": "en",
    "spa": "es", "est": "et", "ekk": "et", "eus": "eu", "pes": "fa", "fas": "fa", "fin": "fi", "fra": "fr",
    "glg": "gl", "guj": "gu", "heb": "he", "hin": "hi", "hrv": "hr", "hat": "ht", "hun": "hu", "hye": "hy",
    "ind": "id", "isl": "is", "ita": "it", "jpn": "ja", "jav": "jv", "kat": "ka", "kaz": "kk", "khm": "km",
    "kan": "kn", "kor": "ko", "kir": "ky", "lao": "lo", "lit": "lt", "lvs": "lv", "lav": "lv", "mkd": "mk",
    "mal": "ml", "khk": "mn", "mon": "mn", "mar": "mr", "zsm": "ms", "msa": "ms", "mya": "my", "npi": "ne",
    "nep": "ne", "nld": "nl", "nob": "no", "nno": "no", "nor": "no", "pan": "pa", "pol": "pl", "por": "pt",
    "quy": "qu", "quz": "qu", "que": "qu", "ron": "ro", "rus": "ru", "sin": "si", "slk": "sk", "slv": "sl",
    "som": "so", "als": "sq", "sqi": "sq", "srp": "sr", "swe": "sv", "swh": "sw", "swa": "sw", "tam": "ta",
    "tel": "te", "tha": "th", "tgl": "tl", "tur": "tr", "ukr": "uk", "urd": "ur", "vie": "vi", "yor": "yo",
    "cmn": "zh", "zho": "zh",
}


def to_mgte(label: str) -> str:
    """Map an identifier label (``__label__nb``, ``cmn_Hans``, ``ZH``) to our code, else the label itself."""
    label = label.removeprefix("__label__").strip()
    low = label.lower().replace("-", "_")
    base = low.split("_")[0]
    if low in ALIASES:
        return ALIASES[low] or low
    if base in ISO639_3:
        return ISO639_3[base]
    if base in ALIASES:
        return ALIASES[base] or base
    return base
