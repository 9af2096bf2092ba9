"""``python -m tvconv.data``: bad arguments exit 2 before any data is generated."""

import sys

import pytest

from tvconv.data import __main__ as cli


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "8"], "--size 8: expected a face image size in pixels, 16-256"),
        (["--size", "100000"], "--size 100000: expected a face image size in pixels, 16-256"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--out", "{tmp}"], "is a folder; expected a file path"),
        (["--out", "{tmp}/grid.xyz"], "unknown image type '.xyz'"),
        (["--out", "{tmp}/grid"], "unknown image type ''"),
        (["--out", "{tmp}/file.txt/grid.png"], "file.txt is not a folder"),
    ],
)
def test_bad_arguments_exit_2_before_any_data_is_made(argv, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "file.txt").write_text("not a folder")
    monkeypatch.setattr(cli, "preview", lambda *args: pytest.fail("data generated"))
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    monkeypatch.setattr(sys, "argv", ["python -m tvconv.data", *argv])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_good_arguments_reach_the_preview_with_its_folder_made(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "preview", lambda *args: calls.append(args))
    out = tmp_path / "new" / "grid.png"
    monkeypatch.setattr(sys, "argv", ["x", "--out", str(out), "--size", "16", "--seed", "3"])
    cli.main()
    assert calls == [(out, 16, 3)] and out.parent.is_dir() and not out.exists()
