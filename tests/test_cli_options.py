"""One option language across the commands: the same idea has the same name (and short
form) everywhere, the choice lists that --help shows are the library's own, and shell
completion is on."""
from __future__ import annotations

from collections import defaultdict

import typer
from typer.testing import CliRunner

from tprna import cli
from tprna.features import FEATURE_SETS
from tprna.losses import LOSSES
from tprna.models import MODELS

runner = CliRunner()


def commands(group=None, prefix: str = "") -> dict:
    """'store build' → its command object, for every command."""
    group = group or typer.main.get_command(cli.app)
    found = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found.update(commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


def options() -> dict[str, dict]:
    """command → long option name → the option."""
    return {name: {long: p for p in command.params if p.param_type_name == "option"
                   for long in p.opts if long.startswith("--")}
            for name, command in commands().items()}


def test_the_choice_lists_are_the_librarys():
    assert list(cli.MODEL_NAMES) == list(MODELS)
    assert list(cli.FEATURE_SET_NAMES) == list(FEATURE_SETS)
    assert list(cli.LOSS_NAMES) == list(LOSSES)


def test_one_name_and_one_short_form_per_idea():
    every = options()
    retired = {"--batch", "--pixel-budget", "--spec"}  # now --max-batch, --batch-pixels, --features
    assert not {(c, o) for c, opts in every.items() for o in opts if o in retired}
    shorts: dict[str, set] = defaultdict(set)
    for opts in every.values():
        for long, option in opts.items():
            shorts[long].add(tuple(sorted(o for o in option.opts if not o.startswith("--"))))
    assert {long: s for long, s in shorts.items() if len(s) > 1} == {}
    assert shorts["--out"] == {("-o",)}
    for name in ("train", "evaluate", "infer"):
        assert "--device" in every[name]
    for name in ("infer", "export triton"):
        assert "--max-batch" in every[name]
    for name in ("infer", "train"):
        assert "--batch-pixels" in every[name]
    for name in ("store build", "store dump", "store split", "train", "evaluate"):
        assert "--features" in every[name]


def test_help_lists_the_choices():
    text = runner.invoke(cli.app, ["train", "--help"], terminal_width=400).output
    assert "tploss" in text and "mffnet36" in text and "cuda:N" in text and "cov+ss+profile" in text
    text = runner.invoke(cli.app, ["store", "build", "--help"], terminal_width=400).output
    assert "rna|protein" in text and "float16|float32" in text
    text = runner.invoke(cli.app, ["export", "triton", "--help"], terminal_width=400).output
    assert "latest|all" in text


def complete(line: str) -> list[str]:
    """What bash completion offers after ``line`` (click's completion protocol)."""
    words = line.split()
    env = {"_TPRNA_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    result = runner.invoke(cli.app, [], env=env, prog_name="tprna")
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_choices_complete_in_the_shell():
    root = typer.main.get_command(cli.app)
    assert any("--install-completion" in p.opts for p in root.params)
    assert complete("tprna train --features cov+ss+p") == ["cov+ss+profile", "cov+ss+profile+coupling",
                                                                 "cov+ss+profile+dca", "cov+ss+plm",
                                                                 "cov+ss+profile+plm", "cov+ss+profile+plm+neff"]
    assert complete("tprna train --features cov+ss+") == ["cov+ss+profile", "cov+ss+profile+coupling", "cov+ss+apc",
                                                          "cov+ss+dca", "cov+ss+alifold", "cov+ss+profile+dca",
                                                          "cov+ss+plm", "cov+ss+profile+plm",
                                                          "cov+ss+profile+plm+neff"]
    assert complete("tprna infer --device c") == ["cpu", "cuda"]
    assert complete("tprna train --loss t") == ["tploss"]
    assert complete("tprna store build s.zarr --molecule p") == ["protein"]


def test_a_choice_outside_the_list_is_refused_before_running():
    result = runner.invoke(cli.app, ["train", "s.zarr", "-o", "run", "--loss", "nope"])
    assert result.exit_code == 2 and "nope" in result.output
