"""studies.execute.Heartbeat: where a training run is, printed as it goes (logs and terminals)."""

import io

from tqdm import tqdm

from studies.execute import Heartbeat, duration
from studies.runner import run_study
from studies.spec import Run, load_spec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def beat(epochs: int = 10, every: float = 300.0):
    clock, out = Clock(), io.StringIO()
    run = Run(study="s", preset="quick", cell="atom=tvconv", seed=3, config=None)
    return Heartbeat(run, epochs, out=out, every=every, clock=clock), clock, out


def test_a_line_after_the_first_epoch_then_at_most_every_interval():
    heartbeat, clock, out = beat()
    clock.now += 60
    heartbeat({"epoch": 1, "loss": 17.3125, "train_acc_pct": 0.59375})
    lines = out.getvalue().splitlines()
    # pace 60 s per epoch: 9 epochs left -> 9 minutes
    assert lines == [
        "  running atom=tvconv seed=3: epoch 1/10, loss 17.31, train acc 0.6%; 1m00s so far, "
        "ETA 9m00s"
    ]
    for epoch in (2, 3, 4, 5):  # 60 s each: 240 s since the last line, under 300
        clock.now += 60
        heartbeat({"epoch": epoch, "loss": 1.0})
    assert len(out.getvalue().splitlines()) == 1
    clock.now += 60
    heartbeat({"epoch": 6, "loss": 0.5})  # 300 s since the last line
    assert out.getvalue().splitlines()[-1] == (
        "  running atom=tvconv seed=3: epoch 6/10, loss 0.5; 6m00s so far, ETA 4m00s"
    )


def test_the_eta_uses_the_epochs_own_times_when_recorded():
    heartbeat, clock, out = beat(epochs=11, every=100.0)
    clock.now += 56  # the first epoch's 10 s plus the data and model set-up
    heartbeat({"epoch": 1, "seconds": 10.0})
    assert out.getvalue().strip().endswith("epoch 1/11; 56s so far, ETA 1m40s")  # 10 left x 10 s
    for epoch in range(2, 12):
        clock.now += 12
        heartbeat({"epoch": epoch, "seconds": 12.0})
    # the line at epoch 10 (108 s after the first): median of 10 and 9 x 12 = 12 s, 1 left
    assert out.getvalue().splitlines()[-1].endswith("epoch 10/11; 2m44s so far, ETA 12s")
    assert len(out.getvalue().splitlines()) == 2


def test_a_paused_epoch_does_not_inflate_the_eta():
    heartbeat, clock, out = beat(epochs=100, every=300.0)
    for epoch, seconds in enumerate([6.0] * 10 + [540.0] + [6.0] * 10, start=1):
        clock.now += seconds  # epoch 11 spans a 9-minute pause (SIGSTOP, a starved core)
        heartbeat({"epoch": epoch, "seconds": seconds})
    # the line at epoch 11 (600 s after the first): median 6 s x 89 epochs left
    assert out.getvalue().splitlines()[-1].endswith("epoch 11/100; 10m00s so far, ETA 8m54s")


def test_never_after_the_last_epoch():
    heartbeat, clock, out = beat(epochs=2, every=0.0)
    clock.now += 5
    heartbeat({"epoch": 1, "loss": 2.0})
    clock.now += 5
    heartbeat({"epoch": 2, "loss": 1.0})  # the run's finished line follows instead
    assert [line.split(":")[1].split(",")[0] for line in out.getvalue().splitlines()] == [
        " epoch 1/2"
    ]


def test_a_resumed_run_counts_its_pace_from_the_checkpoint():
    heartbeat, clock, out = beat(epochs=100)
    clock.now += 30
    heartbeat({"epoch": 41, "train_acc_pct": 12.25})  # resumed after epoch 40: no loss recorded
    assert out.getvalue().strip().endswith("epoch 41/100, train acc 12.2%; 30s so far, ETA 29m30s")


def test_duration_text():
    assert [duration(s) for s in (0, 42.4, 365, 3720, -3)] == ["0s", "42s", "6m05s", "1h02m", "0s"]


def test_a_sweeps_training_run_prints_its_heartbeat(write_spec, tmp_path, capsys):
    spec = write_spec(
        """
        description: "Tiny: heartbeat"
        task: face
        base:
          data.synthetic.train_identities: 8
          data.synthetic.images_per_identity: 4
          optim.batch_size: 16
          optim.epochs: 2
          model.atom: dw
        presets:
          smoke: {base: smoke, seeds: [0]}
        """,
        name="beat",
    )
    assert run_study(load_spec(spec), "smoke", tmp_path / "results", out=io.StringIO()) == 0
    assert "  running base seed=0: epoch 1/2, loss " in capsys.readouterr().out


def test_the_line_goes_above_a_progress_bar_in_the_same_process():
    heartbeat, _clock, out = beat()
    bar = tqdm(total=3, file=out, ncols=60)
    bar.update(1)
    heartbeat({"epoch": 1, "loss": 2.0})
    written = out.getvalue()
    bar.close()
    # the bar is cleared, the line written on its own, then the bar drawn again below it
    assert "\r  running atom=tvconv seed=3: epoch 1/10, loss 2;" in written
    assert written.rindex("running") < written.rindex("1/3")
