"""Configuration errors name the key, its value, where it came from and what is allowed."""
import pytest
import yaml

from samc import config
from tests.helpers import ROOT


def _error(*overrides, raw=None):
    with pytest.raises(config.ConfigError) as exc:
        if raw is None:
            config.load(ROOT / "params.yaml", list(overrides))
        else:
            config.from_dict(raw, list(overrides), source="p.yaml")
    return str(exc.value)


def test_a_set_value_is_blamed_on_its_override_and_near_misses_get_a_suggestion():
    msg = _error("train.method=gemm")
    assert "(from --set train.method=gemm)" in msg and "did you mean 'gem'?" in msg
    assert "allowed values: finetune, er, gem" in msg
    msg = _error("samc.mu=7")
    assert "samc.mu = 7" in msg and "(from --set samc.mu=7)" in msg
    msg = _error("samc.muu=0.5")
    assert "'muu' (did you mean 'mu'?) (from --set samc.muu=0.5)" in msg
    assert "did you mean 'samc'?" in _error("sacm.mu=0.5")


def test_a_misspelled_section_is_one_unknown_name_and_one_missing_section():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["sacm"] = raw.pop("samc")
    lines = _error(raw=raw).splitlines()
    assert lines[0] == "p.yaml: invalid parameters:"
    assert "'sacm' (did you mean 'samc'?)" in lines[1]
    assert lines[2].strip() == "samc: section missing from the parameter file"
    assert len(lines) == 3, lines                       # not one line per key the section lacks
    # a section present but short of one key still names that key
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["samc"]["mu"]
    assert "'mu' is a required property" in _error(raw=raw)
