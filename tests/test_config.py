"""Config: unknown keys with did-you-mean, every problem at once with its key path, overrides."""
import pytest

from recipe.config import load, parse_override
from recipe.errors import ConfigError
from tests.conftest import invoke, write_config


def test_typo_section_suggests_and_exits_2(tmp_path):
    cfg = write_config(tmp_path, "name: t\ndata: {{source: builtin:iris}}\ntrian: {{lr: 0.1}}\n")
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs")
    assert r.exit_code == 2
    assert "did you mean 'train'" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_negative_lr_names_key(tmp_path):
    cfg = write_config(tmp_path, "name: t\ndata: {{source: builtin:iris}}\ntrain: {{lr: -1}}\n")
    r = invoke("inspect", cfg, "--runs", tmp_path / "runs")
    assert r.exit_code == 2
    assert "train.lr" in r.stderr and "-1" in r.stderr


def test_all_problems_reported_at_once(tmp_path):
    p = write_config(tmp_path, "name: t\ndata: {{source: builtin:iris}}\ntrain: {{lr: -1, epochs: 0, optimiser: sgd}}\n"
                               "model: {{dropout: 2}}\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    text = "\n".join(e.value.messages)
    for key in ("train.lr", "train.epochs", "model.dropout", "train.optimiser"):
        assert key in text, key
    assert "did you mean 'train.optimizer'" in text


def test_override_is_yaml_typed_and_validated(tmp_path):
    p = write_config(tmp_path, "name: t\ndata: {{source: builtin:iris}}\n")
    cfg = load(p, ["train.lr=0.01", "model.hidden=[8, 8]", "train.early_stopping={{patience: 3}}".replace("{{", "{").replace("}}", "}")])
    assert cfg.train.lr == 0.01 and cfg.model.hidden == [8, 8] and cfg.train.early_stopping.patience == 3
    with pytest.raises(ConfigError) as e:
        load(p, ["train.lr=abc"])
    assert "train.lr" in str(e.value)
    with pytest.raises(ConfigError):
        parse_override("train.lr")


def test_relative_paths_resolve_against_config_folder(tmp_path):
    sub = tmp_path / "exp"
    sub.mkdir()
    p = write_config(sub, "name: t\ndata: {{source: data.csv}}\n")
    cfg = load(p)
    assert cfg.resolve("data.csv") == sub / "data.csv"


def test_unknown_check_id_and_missing_reason(tmp_path):
    p = write_config(tmp_path, "name: t\ndata: {{source: builtin:iris}}\nchecks:\n  data.imbalanse: {{severity: warn, reason: x}}\n"
                               "  data.leak: {{severity: warn}}\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    text = str(e.value)
    assert "did you mean 'data.imbalance'" in text
    assert "checks.data.leak.reason" in text


def test_yaml_alias_bomb_refused(tmp_path):
    bomb = "name: t\ndata: {source: builtin:iris}\na: &a [x, x]\n" + "".join(
        f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i-1}'}, *{'a' if i == 0 else f'b{i-1}'}]\n" for i in range(120))
    p = tmp_path / "bomb.yaml"
    p.write_text(bomb)
    with pytest.raises(ConfigError):
        load(p)


def test_not_a_mapping_and_missing_file(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    assert invoke("inspect", p, "--runs", tmp_path / "r").exit_code == 2
    r = invoke("inspect", tmp_path / "nope.yaml", "--runs", tmp_path / "r")
    assert r.exit_code == 2 and "nope.yaml" in r.stderr


def test_a_misspelt_choice_gets_a_did_you_mean(tmp_path):
    p = write_config(tmp_path, "name: t\ndata: {{source: builtin:iris, normalize: standart}}\n"
                               "train: {{optimizer: adamm}}\n")
    with pytest.raises(ConfigError) as e:
        load(p)
    assert ("train.optimizer: must be one of sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw (got 'adamm'); "
            "did you mean 'adam'?") in e.value.messages
    assert "data.normalize: must be one of standard, minmax, none (got 'standart'); did you mean 'standard'?" \
        in e.value.messages


def test_split_leaving_exactly_ten_percent_is_accepted(tmp_path):
    """issue 17 item 10: 0.75 + 0.15 is 0.9000000000000001 in floating point, and still leaves 10% for train."""
    p = write_config(tmp_path, "name: t\ndata: {{source: builtin:iris, split: {{val: 0.75, test: 0.15}}}}\n")
    cfg = load(p)
    assert (cfg.data.split.val, cfg.data.split.test) == (0.75, 0.15)
    with pytest.raises(ConfigError) as e:
        load(p, ["data.split.val=0.76"])
    assert "data.split" in "\n".join(e.value.messages) and "at least 10% for train" in "\n".join(e.value.messages)


def test_a_config_that_fails_leaves_no_empty_run_folder(tmp_path):
    """issue 17 item 10: neither a schema error nor a data key that names no column leaves runs/<name>/."""
    runs = tmp_path / "runs"
    bad = write_config(tmp_path, "name: t\ndata: {{source: builtin:iris}}\ntrain: {{lr: -1}}\n")
    assert invoke("inspect", bad, "--runs", runs).exit_code == 2 and not runs.exists()
    (tmp_path / "d.csv").write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    bad = write_config(tmp_path, "name: t\ndata: {{source: d.csv, target: nope}}\n")
    r = invoke("inspect", bad, "--runs", runs)
    assert r.exit_code == 2 and "target column 'nope' not found" in r.stderr
    assert not (runs / "t").exists() and not runs.exists()
    # a folder that already held something is left alone
    (runs / "t" / "inspect").mkdir(parents=True)
    assert invoke("inspect", bad, "--runs", runs).exit_code == 2 and (runs / "t" / "inspect").is_dir()


def test_force_is_offered_only_where_it_can_work(tmp_path):
    """issue 17 item 10: a missing upstream stage has no artifacts to build on, so --force is not offered."""
    runs = tmp_path / "runs"
    cfg = write_config(tmp_path, "name: t\nseed: 0\ndata: {{source: builtin:iris}}\nmodel: {{kind: mlp, hidden: [8]}}\n"
                                 "train: {{epochs: 3}}\n")
    r = invoke("baseline", cfg, "--runs", runs)
    assert r.exit_code == 3 and "inspect has not run" in r.stderr and "--force" not in r.stderr
    assert invoke("inspect", cfg, "--runs", runs, "-q").exit_code == 0
    r = invoke("baseline", cfg, "--runs", runs, "-o", "data.split.val=0.2")     # inspect is stale: --force works
    assert r.exit_code == 3 and "inspect is stale" in r.stderr and "(or pass --force)" in r.stderr
