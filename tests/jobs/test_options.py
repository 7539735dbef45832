"""The command line is built from the jobs' config dataclasses (jobs/options.py,
cli/options.py): every option field is a flag, its default is the config's, and a bad value is
refused with a message naming it."""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest

from raydenoise.cli.options import config_values
from raydenoise.cli.parser import build_parser
from raydenoise.jobs.denoise import DenoiseConfig
from raydenoise.jobs.evaluate import EvaluateConfig
from raydenoise.jobs.ingest import IngestConfig
from raydenoise.jobs.options import option_of
from raydenoise.jobs.synth import SynthConfig
from raydenoise.jobs.train import TrainConfig

# each command with the fewest arguments it accepts
MINIMAL = {
    "synth": (SynthConfig, ["--out", "o", "--noise", "gaussian:25"]),
    "ingest": (IngestConfig, ["--high", "h", "--out", "o"]),
    "denoise": (DenoiseConfig, ["--input", "i", "--output", "o"]),
    "evaluate": (EvaluateConfig, ["--data", "d", "--model", "builtin:denoise"]),
    "train": (TrainConfig, ["--data", "d", "--storage-path", "s", "--name", "n"]),
}


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_every_option_field_is_a_flag_whose_default_is_the_configs(command):
    config, argv = MINIMAL[command]
    args = build_parser().parse_args([command, *argv])
    values = config_values(config, args)
    options = [f for f in fields(config) if option_of(f) is not None]
    assert {f.name for f in options} == set(values)
    for f in options:
        if f.default is not MISSING:  # MISSING: given above, or the network's (train)
            assert values[f.name] == f.default, f.name
    help_text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
    for f in options:
        flag = option_of(f).flag or "--" + f.name.replace("_", "-")
        assert flag in help_text and option_of(f).help.split()[0] in help_text


def test_a_config_made_from_the_command_line_is_the_same_as_one_made_in_python():
    args = build_parser().parse_args(
        ["denoise", "--input", "i", "--output", "o", "--tile", "256", "--format", "png"]
    )
    assert DenoiseConfig(**config_values(DenoiseConfig, args)) == DenoiseConfig(
        input="i", output="o", tile=256, format="png"
    )
    args = build_parser().parse_args(
        ["ingest", "--high", "h", "--out", "o", "--split", "0.8,0.2,0"]
    )
    assert IngestConfig(**config_values(IngestConfig, args)) == IngestConfig(
        high="h", out="o", split=(0.8, 0.2, 0.0)
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["denoise", "--input", "i", "--output", "o", "--tile", "8"], "tiles must be at least"),
        (["denoise", "--input", "i", "--output", "o", "--batch-size", "0"], "must be at least 1"),
        (["denoise", "--input", "i", "--output", "o", "--format", "gif"], "invalid choice"),
        (["evaluate", "--data", "d", "--model", "m", "--baselines", "nlm,foo"], "unknown baseline"),
        (["ingest", "--high", "h", "--out", "o", "--split", "2,2"], "--split"),
        (["train", "--data", "d", "--storage-path", "s", "--name", "n", "--lr", "nan"], "finite"),
        (["synth", "--out", "o", "--noise", "g", "--crop", "4"], "HEIGHT,WIDTH"),
    ],
)
def test_a_bad_value_is_refused_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert message in err and "argument --" in err


def test_the_configs_take_keywords_only():
    with pytest.raises(TypeError):
        DenoiseConfig("i", "o")  # type: ignore[misc]
