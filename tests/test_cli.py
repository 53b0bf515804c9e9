"""The CLI as a user meets it: tables, JSON, and one-line errors with documented exit codes."""

import json
import sys

from conftest import REFERENCE_PARAMS
from typer.testing import CliRunner

from inception_deploy.cli import app

runner = CliRunner()

GMACS = {"googlenet": 1.50, "inception_v3": 5.71, "inception_v4": 12.25, "inception_resnet_v2": 13.16}


def test_models_json_matches_the_reference_counts_exactly():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == list(REFERENCE_PARAMS)
    for r in rows:
        assert set(r) == {"name", "aliases", "params", "params_with_aux", "input_size", "gmacs", "checkpoint_layout"}
        assert (r["params"], r["params_with_aux"]) == REFERENCE_PARAMS[r["name"]]
        assert r["input_size"] == [3, 224, 224] if r["name"] == "googlenet" else [3, 299, 299]
        if r["name"] in GMACS:
            assert r["gmacs"] == GMACS[r["name"]]
    assert {r["name"]: r["aliases"][0] for r in rows}["inception_resnet_v2"] == "irv2"


def test_models_table_is_readable():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "55,843,464" in result.stdout and "timm inception_resnet_v2" in result.stdout


def _one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_variant(tmp_path):
    _one_line_error(runner.invoke(app, ["export", "v9", "--out", str(tmp_path)]), 2, "unknown variant 'v9'", "irv2")


def test_usage_errors_are_one_line_too():
    _one_line_error(runner.invoke(app, ["export"]), 2, "Missing argument", "--help")
    _one_line_error(runner.invoke(app, ["export", "v3", "--bogus"]), 2, "No such option: --bogus")
    _one_line_error(runner.invoke(app, ["export", "v3", "--num-classes", "ten"]), 2, "--num-classes")
    _one_line_error(runner.invoke(app, ["export", "v3", "--batch", "big"]), 2, "--batch must be")
    _one_line_error(runner.invoke(app, ["export", "v3", "--opset", "7"]), 2, "--opset must be between")
    _one_line_error(runner.invoke(app, ["frobnicate"]), 2, "No such command")


def test_checkpoint_of_another_architecture(tmp_path, library_checkpoints):
    path, _, _ = library_checkpoints("googlenet")
    result = runner.invoke(app, ["export", "irv2", "--weights", str(path), "--out", str(tmp_path / "o")])
    _one_line_error(result, 2, "does not fit inception_resnet_v2", "checkpoint of googlenet", "export v1")
    assert not (tmp_path / "o").exists()


def test_corrupt_and_truncated_checkpoints(tmp_path, library_checkpoints):
    path, _, _ = library_checkpoints("googlenet")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:100_000])
    _one_line_error(runner.invoke(app, ["export", "v1", "--weights", str(cut)]), 2, "corrupt or truncated")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"{}")
    _one_line_error(runner.invoke(app, ["export", "v1", "--weights", str(bad)]), 2, "corrupt or truncated")
    _one_line_error(runner.invoke(app, ["export", "v1", "--weights", str(tmp_path / "nope.pt")]), 2, "does not exist")


def test_head_size_disagreement(tmp_path, library_checkpoints):
    path, _, _ = library_checkpoints("googlenet")
    result = runner.invoke(app, ["export", "v1", "--weights", str(path), "--num-classes", "10"])
    _one_line_error(result, 2, "--num-classes 10 disagrees", "1000 classes")


def test_missing_backend_exits_3(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is absent
    result = runner.invoke(app, ["export", "v1", "--out", str(tmp_path)])
    _one_line_error(result, 3, "onnxruntime is not available", "pip install onnxruntime")
    assert list(tmp_path.iterdir()) == []


def _readme_synopsis() -> dict[str, set[str]]:
    """The options the README's synopsis block gives each command (a line `inception-deploy CMD …` and the indented
    lines after it)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text[text.index("```\ninception-deploy export VARIANT"):]
    block = block[4:block.index("\n```", 4)]
    options: dict[str, set[str]] = {}
    command = None
    for line in block.splitlines():
        if line.startswith("inception-deploy "):
            command = line.split()[1]
        if command:
            options.setdefault(command, set()).update(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", line))
    return options


def test_the_readme_synopsis_matches_every_commands_options():
    """Every option of every command (from the Typer app itself) is in the README's synopsis, and the synopsis names
    no option a command does not have: drift fails here."""
    from typer.main import get_command

    synopsis = _readme_synopsis()
    group = get_command(app)
    assert set(synopsis) == set(group.commands), (sorted(synopsis), sorted(group.commands))
    for name, command in group.commands.items():
        real = {o for p in command.params if p.param_type_name == "option" and not p.hidden  # typer's own click
                for o in (*p.opts, *p.secondary_opts) if o.startswith("--") and o != "--help"}
        assert real - synopsis[name] == set(), f"{name}: in --help, not in the README's synopsis"
        assert synopsis[name] - real == set(), f"{name}: in the README's synopsis, not an option of the command"


def test_every_backends_help_names_every_backend():
    from typer.main import get_command

    from inception_deploy.runners import BACKENDS

    for name, command in get_command(app).commands.items():
        for param in command.params:
            if "--backends" in getattr(param, "opts", ()):
                text = " ".join(param.help.split())
                assert all(b in text for b in BACKENDS), (name, text)
