"""Audit of a ``mgte mlm-shards`` output: chunks and tokens per language, chunk lengths, the
eq. 1 sampling probability each language gets, and whether the stats agree with the shards."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.audit.page import bar_plot, esc, image, pyplot, save_figure, table


def _lengths_plot(path: Path, lengths: list[int], max_len) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths or [0], bins=40, color="#55A868")
    ax.set_xlabel(f"tokens per chunk (max_len {max_len})")
    ax.set_ylabel("chunks")
    ax.set_title("Chunk lengths")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path.name


def report(root: Path, manifest: dict, out: Path) -> list[str]:
    outputs, extra = manifest["outputs"], manifest.get("extra") or {}
    chunks: Counter = Counter()
    tokens: Counter = Counter()
    lengths: list[int] = []
    for rel in outputs.get("data", []):  # counted from the shards themselves, not only the stats
        t = pq.read_table(root / rel, columns=["lang", "n_tokens"])
        for lang, n in zip(t.column("lang").to_pylist(), t.column("n_tokens").to_pylist()):
            chunks[lang] += 1
            tokens[lang] += n
            lengths.append(n)
    stats = {}
    if outputs.get("shard_stats"):
        stats = {r["lang"]: r for r in pq.read_table(root / outputs["shard_stats"][0]).to_pylist()}
    langs = sorted(chunks, key=lambda lang: -chunks[lang])
    total_chunks, total_tokens = sum(chunks.values()), sum(tokens.values())
    agree = all(stats.get(lang, {}).get("chunks") == chunks[lang] for lang in langs) if stats else None
    parts = [
        f"<h2>Shards</h2><p id='totals'>{total_chunks} chunks, {total_tokens} tokens, {len(langs)} languages, "
        f"{len(outputs.get('data', []))} files, max_len {esc(extra.get('max_len'))}</p>",
        f"<p>manifest extra: chunks {esc(extra.get('chunks'))}, tokens {esc(extra.get('tokens'))}"
        + ("" if extra.get("chunks") in (None, total_chunks) else
           f" <span class='bad'>(the shards hold {total_chunks} chunks)</span>")
        + ("" if agree is None else "; shard_stats agree with the shards" if agree else
           "; <span class='bad'>shard_stats disagree with the shards</span>") + "</p>",
    ]
    if langs:
        parts.append(image(bar_plot(out / "chunks_per_language.png", langs, [chunks[lg] for lg in langs],
                                    title="Chunks per language", ylabel="chunks (log)", log=True),
                           "Chunks per language"))
        parts.append(image(bar_plot(out / "tokens_per_language.png", langs, [tokens[lg] for lg in langs],
                                    title="Tokens per language", ylabel="tokens (log)", log=True),
                           "Tokens per language"))
        parts.append(image(_lengths_plot(out / "chunk_lengths.png", lengths, extra.get("max_len")), "Chunk lengths"))
    parts.append("<h2>Languages</h2>" + table(
        ["lang", "docs", "chunks", "tokens", "tokens/chunk", "q (eq. 1)"],
        [[lg, stats.get(lg, {}).get("docs"), chunks[lg], tokens[lg], round(tokens[lg] / chunks[lg], 1),
          stats.get(lg, {}).get("q")] for lg in langs]))
    return parts
