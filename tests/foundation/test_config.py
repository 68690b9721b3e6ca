from pathlib import Path

import pytest

from foundation.config import config_hash, frozen, load_config

from foundation.errors import ConfigError
from pipelines.corpus import Config as CorpusConfig


@frozen
class Inner:
    x: int = 1
    names: tuple[str, ...] = ("a",)


@frozen
class Outer:
    inner: Inner = Inner(x=5)
    rate: float = 0.5
    mode: str = "m"
    maybe: int | None = None

    def validate(self):
        if self.rate < 0:
            raise ValueError("rate must be >= 0")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "c.yaml", "inner:\n  x: 2\n  typo: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(Outer, path)
    assert "inner.typo" in str(err.value) and str(path) in str(err.value)


def test_unknown_key_from_set_is_an_error():
    with pytest.raises(ConfigError, match="'inner.nope'"):
        load_config(Outer, None, ["inner.nope=1"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="'inner.x': expected an integer"):
        load_config(Outer, None, ["inner.x=abc"])


def test_scientific_notation_without_a_dot_is_a_float():
    assert load_config(Outer, None, ["rate=1e-2"]).rate == 0.01


def test_cross_field_check_runs_at_load():
    with pytest.raises(ConfigError, match="rate must be >= 0"):
        load_config(Outer, None, ["rate=-1"])


def test_partial_nested_mapping_keeps_the_field_default(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "c.yaml", "inner:\n  names: [p, q]\n"))
    assert cfg.inner == Inner(x=5, names=("p", "q"))


def test_set_overrides_and_base_inheritance(tmp_path):
    write(tmp_path, "base.yaml", "rate: 0.25\ninner:\n  x: 7\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\nmode: child\n")
    cfg = load_config(Outer, child, ["inner.names=[z]", "maybe=3"])
    assert (cfg.rate, cfg.mode, cfg.inner.x, cfg.inner.names, cfg.maybe) == (0.25, "child", 7, ("z",), 3)


def test_configs_are_frozen_and_hash_is_stable():
    a, b = load_config(Outer, None, ["rate=0.1"]), load_config(Outer, None, ["rate=0.1"])
    with pytest.raises(Exception):
        a.rate = 3  # type: ignore[misc]
    assert config_hash(a) == config_hash(b) != config_hash(load_config(Outer, None, ["rate=0.2"]))


@pytest.mark.parametrize("path", ["dags/configs/corpus/tiny.yaml", "dags/configs/corpus/paper.yaml"])
def test_shipped_corpus_configs_load(path):
    cfg = load_config(CorpusConfig, path)
    assert cfg.stats.alpha == 0.5 and len(cfg.lid.languages) == 75


@pytest.mark.parametrize("raw", ["nan", ".nan", "NaN", "inf", "-.inf", "1e999"])
def test_nan_and_infinities_are_refused_where_a_number_is_expected(tmp_path, raw):
    """NaN passes every `x <= 0` check and inf trains before failing: both refused at load, naming
    the key and the file, for a plain float and for an optional one (`float | None`)."""
    from training.trm import Config as TRMConfig

    path = tmp_path / "c.yaml"
    path.write_text(f"loop:\n  optim:\n    lr: {raw}\n")
    with pytest.raises(ConfigError, match=rf"{path}.*key 'loop.optim.lr': expected a finite number"):
        load_config(TRMConfig, path)
    with pytest.raises(ConfigError, match=r"\(with --set loop.optim.head_lr=.*key 'loop.optim.head_lr': expected a finite"):
        load_config(TRMConfig, None, [f"loop.optim.head_lr={raw}"])


def test_a_non_finite_setting_exits_2_from_the_cli_before_any_work(tmp_path, capsys):
    from dags.cli import main

    out = tmp_path / "out"
    config = Path(__file__).resolve().parents[2] / "dags/configs/trm/tiny.yaml"
    assert main(["train", "trm", "--config", str(config), "--output", str(out),
                 "--set", "loop.optim.lr=nan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dags/configs/trm/tiny.yaml" in err[0] and "'loop.optim.lr'" in err[0]
    assert not out.exists()
