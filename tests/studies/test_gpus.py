"""Many runs per GPU: the GPU list (``--gpus``, the visible devices), the slots that spread runs
over it, the pool that uses them, and the record that says which device ran a run. No GPU is
needed: the device count and the workers are faked where CUDA would be touched."""

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from studies import launch
from studies.cli import main, parse_gpus
from studies.execute import execute_run, threads_per_job
from studies.launch import GpuSlots, choose_gpus, launch_local
from studies.runner import run_study
from studies.spec import SpecError, load_spec
from studies.store import Store

PROFILE = """
    description: "Profile: timings"
    task: profile
    base:
      profile.model: mobilenet_v2_x0_1
      profile.input_size: 32
      profile.batch_sizes: [1]
    presets:
      smoke: {seeds: [0]}
"""


def _runs(write_spec, overrides=None, text=None):
    spec = load_spec(write_spec(text) if text else write_spec())
    return spec.runs("smoke", overrides or {})


def test_slots_fill_the_least_busy_gpu_first_and_never_exceed_their_count():
    slots = GpuSlots([0, 1], per_gpu=2)
    taken = [slots.take() for _ in range(4)]
    assert taken == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    with pytest.raises(RuntimeError, match="every GPU slot is taken"):
        slots.take()
    slots.give_back("cuda:1")
    assert slots.take() == "cuda:1"
    slots.give_back("cuda:0")
    slots.give_back("cuda:0")
    assert slots.take() == "cuda:0" and slots.in_flight == {0: 1, 1: 2}


def test_gpus_default_to_every_visible_one_for_runs_on_auto_or_cuda(write_spec, monkeypatch):
    monkeypatch.setattr(launch, "visible_gpus", lambda: 3)
    assert choose_gpus(_runs(write_spec), None) == [0, 1, 2]  # device=auto
    assert choose_gpus(_runs(write_spec, {"device": "cuda"}), None) == [0, 1, 2]
    assert choose_gpus(_runs(write_spec, {"device": "cpu"}), None) is None
    assert choose_gpus(_runs(write_spec, {"device": "cuda:1"}), None) is None  # pinned: as is
    assert choose_gpus(_runs(write_spec), [2, 0]) == [2, 0]
    monkeypatch.setattr(launch, "visible_gpus", lambda: 0)
    assert choose_gpus(_runs(write_spec), None) is None  # no GPU: the CPU as before


@pytest.mark.parametrize(
    ("visible", "overrides", "gpus", "message"),
    [
        (0, {}, [0], "--gpus 0: no CUDA device is visible here"),
        (2, {}, [0, 2], "GPU 2 is not visible here (visible: 0-1"),
        (2, {"device": "cpu"}, [0], "--gpus with device=cpu"),
        (2, {"device": "cuda:1"}, [0], "--gpus with device=cuda:1"),
    ],
)
def test_bad_gpu_requests_are_refused(write_spec, monkeypatch, visible, overrides, gpus, message):
    monkeypatch.setattr(launch, "visible_gpus", lambda: visible)
    with pytest.raises(SpecError) as caught:
        choose_gpus(_runs(write_spec, overrides), gpus)
    assert message in str(caught.value)


def test_gpus_are_refused_for_runs_that_do_not_train(write_spec, monkeypatch):
    monkeypatch.setattr(launch, "visible_gpus", lambda: 1)
    with pytest.raises(SpecError, match="--gpus schedules training runs"):
        choose_gpus(_runs(write_spec, text=PROFILE), [0])
    assert choose_gpus(_runs(write_spec, text=PROFILE), None) is None


@pytest.mark.parametrize(("text", "gpus"), [("0", [0]), ("0,1", [0, 1]), (" 3 , 1", [3, 1])])
def test_gpu_lists_parse(text, gpus):
    assert parse_gpus(text) == gpus


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "expected GPU indices"), ("a", "expected GPU indices"), ("-1", "expected GPU"),
     ("0,,1", "expected GPU indices"), ("1,1", "given more than once"),
     ("\u00b2", "expected GPU indices")],
)  # fmt: skip
def test_bad_gpu_lists_are_refused(text, message):
    with pytest.raises(SpecError, match=message):
        parse_gpus(text)


@pytest.mark.parametrize("value", ["x", "0,0", "7"])
def test_bad_gpus_on_the_command_line_exit_2_before_any_run(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setattr(launch, "visible_gpus", lambda: 1)
    results = tmp_path / "r"
    code = main(["run", "init", "--preset", "smoke", "--gpus", value, "--results", str(results)])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --gpus")
    assert not results.exists()


def test_gpus_with_the_slurm_launcher_are_refused(write_spec, tmp_path):
    with pytest.raises(SpecError, match="--gpus is for the local launcher"):
        run_study(
            load_spec(write_spec()),
            "smoke",
            tmp_path,
            launcher="slurm",
            gpus=[0],
            out=io.StringIO(),
        )


def test_the_slurm_launcher_without_slurm_is_refused_not_run_here(
    write_spec, tmp_path, monkeypatch
):
    """Without sbatch, submitit's auto cluster is this machine: the sweep would run locally
    under a 'submitted to local' line; --slurm-cluster local still asks for that on purpose."""
    monkeypatch.setattr("studies.runner.shutil.which", lambda name: None)
    with pytest.raises(SpecError, match="--launcher slurm: no SLURM here"):
        run_study(load_spec(write_spec()), "smoke", tmp_path, launcher="slurm", out=io.StringIO())
    assert not (tmp_path / "tiny").exists()


class _ThreadPool(ThreadPoolExecutor):
    """The process pool's interface on threads, so the faked ``execute_run`` is the one called."""

    def __init__(self, max_workers, mp_context=None, initializer=None, initargs=()):
        # the process initializer (die with the runner) belongs to worker processes: not run here
        super().__init__(max_workers=max_workers)


def test_the_pool_runs_jobs_per_gpu_at_once_and_splits_the_cpu_threads(write_spec, monkeypatch):
    runs = _runs(write_spec) * 3  # 18 runs (the same 6 three times: execute_run is faked)
    lock, busy, peak, calls = threading.Lock(), {}, {}, []

    def fake_execute(run, root, threads, force, sha, retry_failed, device=None):
        with lock:
            busy[device] = busy.get(device, 0) + 1
            peak[device] = max(peak.get(device, 0), busy[device])
            calls.append((device, threads))
        time.sleep(0.02)
        with lock:
            busy[device] -= 1
        return "complete"

    monkeypatch.setattr(launch, "execute_run", fake_execute)
    monkeypatch.setattr(launch, "ProcessPoolExecutor", _ThreadPool)
    out = io.StringIO()
    options = {"force": False, "sha": None, "retry_failed": False}
    launch_local(runs, None, 2, options, out, gpus=[0, 1])
    assert len(calls) == 18
    assert peak == {"cuda:0": 2, "cuda:1": 2}  # both GPUs, never more than --jobs on one
    assert {threads for _, threads in calls} == {threads_per_job(4)}
    assert "2 run(s) at once on each of GPU(s) 0,1" in out.getvalue()


def test_one_slot_runs_in_process_on_its_gpu(write_spec, monkeypatch):
    devices = []

    def fake_execute(run, root, threads, **options):
        devices.append(options["device"])
        return "complete"

    monkeypatch.setattr(launch, "execute_run", fake_execute)
    options = {"force": False, "sha": None, "retry_failed": False}
    launch_local(_runs(write_spec)[:2], None, 1, options, io.StringIO(), gpus=[1])
    assert devices == ["cuda:1", "cuda:1"]


def test_the_record_says_which_device_ran_the_run(write_spec, tmp_path):
    run = _runs(write_spec)[0]
    assert execute_run(run, tmp_path, 1, device="cpu") == "complete"
    record = Store(tmp_path, run.study, run.preset).read(run.run_id)
    assert record["environment"]["device"] == "cpu"
    assert record["environment_run"]["device"] == "cpu"
    assert record["run_id"] == run.run_id  # the device is not part of the result


FACE_STUDIES = ("tradeoff", "aug", "init", "weightgen", "depth", "convergence")


@pytest.mark.parametrize("study", FACE_STUDIES)
def test_every_face_study_has_a_gpu_preset_of_the_quick_cells_on_cuda(study):
    spec = load_spec(study)
    quick, gpu = spec.runs("quick"), spec.runs("gpu")
    assert {run.cell for run in gpu} == {run.cell for run in quick}
    assert len({run.seed for run in gpu}) >= 10 > len({run.seed for run in quick})
    assert {run.config.section.device for run in gpu} == {"cuda"}
    # the same recipe as quick: only the device (not part of the run_id) and the seeds differ
    shared = {run.seed for run in quick} & {run.seed for run in gpu}
    assert {r.run_id for r in quick if r.seed in shared} == {
        r.run_id for r in gpu if r.seed in shared
    }


def test_the_profile_gpu_preset_measures_fp32_and_bf16_up_to_batch_256():
    runs = load_spec("profile").runs("gpu")
    sections = [run.config.section for run in runs]
    assert {s.dtype for s in sections} == {"float32", "bfloat16"}
    assert {s.device for s in sections} == {"cuda"}
    assert max(max(s.batch_sizes) for s in sections) == 256
    assert any(s.layer_channels for s in sections) and any(s.form == "train" for s in sections)


def test_spec_seeds_may_be_written_as_a_range(write_spec):
    spec = load_spec(write_spec(TINY_RANGE))
    assert spec.seeds("smoke") == [0, 1, 2, 5]
    with pytest.raises(SpecError, match=r"presets.smoke.seeds '3-1': the range 3-1 is reversed"):
        load_spec(write_spec(TINY_RANGE.replace('"0-2,5"', '"3-1"'), name="bad"))
    with pytest.raises(SpecError, match=r"presets.smoke.seeds=7: expected a list of ints >= 0"):
        load_spec(write_spec(TINY_RANGE.replace('"0-2,5"', "7"), name="bad2"))


TINY_RANGE = """
    description: "Tiny: seeds as a range"
    task: face
    grid:
      - model.atom: dw
    presets:
      smoke: {base: smoke, seeds: "0-2,5"}
"""


@pytest.mark.parametrize(
    ("visible", "device", "refused"),
    [(0, "cuda", True), (1, "cuda", False), (1, "cuda:1", True), (2, "cuda:1", False),
     (0, "cpu", False), (0, "auto", False)],
)  # fmt: skip
def test_runs_on_a_gpu_this_machine_lacks_are_refused_before_anything_runs(
    write_spec, monkeypatch, visible, device, refused
):
    monkeypatch.setattr(launch, "visible_gpus", lambda: visible)
    runs = _runs(write_spec, {"device": device})
    if refused:
        with pytest.raises(SpecError, match=f"device={device} but this machine has"):
            launch.check_devices(runs)
    else:
        launch.check_devices(runs)


def test_the_gpu_preset_on_a_cpu_machine_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch, "visible_gpus", lambda: 0)
    results = tmp_path / "r"
    assert main(["run", "init", "--preset", "gpu", "--results", str(results)]) == 2
    assert "the gpu preset needs a GPU (on the CPU: --preset quick)" in capsys.readouterr().err
    assert not results.exists()
    assert main(["run", "init", "--preset", "gpu", "--dry-run", "--results", str(results)]) == 0
