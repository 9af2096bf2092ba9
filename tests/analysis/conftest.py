"""Synthetic run records with known values, written to a store in tmp_path."""

import pytest

import tvconv
from studies.config import assign, base_config
from studies.store import Store

BENCHMARKS = ("clean", "pose", "illumination", "age")


def face_record(
    study, cell, seed, accuracy, status="complete", preset="quick", floors=True, **fields
):
    """A face run record whose benchmarks all score ``accuracy`` (+0/+1/-1/+2 offsets, so the
    mean equals accuracy + 0.5), with floors (raw pixels 58 + seed, mean colour 52, untrained
    53 + seed, +1 for TVConv) and whose config carries ``fields`` (dotted keys)."""
    config = assign(base_config("face", "smoke"), "seed", seed)
    for key, value in fields.items():
        config = assign(config, key, value)
    offsets = dict(zip(BENCHMARKS, (0.0, 1.0, -1.0, 2.0), strict=True))
    metrics = {f"{b}_acc_pct": accuracy + offsets[b] for b in BENCHMARKS}
    metrics["mean_acc_pct"] = accuracy + 0.5
    atom = fields.get("model.atom", "tvconv")
    if floors:  # raw pixels and mean colour follow the data (seed); untrained also the atom
        for floor, value in (
            ("pixels", 58.0 + seed),
            ("colour", 52.0),
            ("untrained", 53.0 + seed + (1.0 if atom == "tvconv" else 0.0)),
        ):
            metrics.update({f"floor_{floor}_{b}_acc_pct": value for b in BENCHMARKS})
            metrics[f"floor_{floor}_mean_acc_pct"] = value
    metrics["macs"] = 1_000_000
    metrics["deployed_params"] = 100_000 if atom == "dw" else 150_000
    return {
        "schema_version": 1,
        "results_version": tvconv.RESULTS_VERSION,
        "run_id": config.run_id,
        "study": study,
        "preset": preset,
        "cell": cell,
        "seed": seed,
        "task": "face",
        "config": config.to_dict(),
        "status": status,
        "error": None if status == "complete" else "Traceback ...\nRuntimeError: boom",
        "metrics": metrics if status == "complete" else {},
        "history": [],
        "timings": {"train_seconds": 10.0, "total_seconds": 12.0},
    }


AUG_VALUES = {  # (atom, augment) -> accuracy per seed 0, 1, 2
    ("dw", "hflip"): (60.0, 61.0, 62.0),
    ("tvconv", "hflip"): (63.0, 61.0, 65.0),
    ("dw", "rot30"): (55.0, 56.0, 57.0),
    ("tvconv", "rot30"): (54.0, 55.0, 56.0),
}


def aug_records(values: dict | None = None) -> list[dict]:
    """Face records of study aug from {(atom, augment): [accuracy per seed]} (AUG_VALUES by
    default)."""
    return [
        face_record(
            "aug",
            f"atom={atom} augment={augment}",
            seed,
            value,
            **{"model.atom": atom, "data.augment": augment},
        )
        for (atom, augment), per_seed in (values or AUG_VALUES).items()
        for seed, value in enumerate(per_seed)
    ]


@pytest.fixture
def aug_store(tmp_path):
    store = Store(tmp_path / "results", "aug", "quick")
    for record in aug_records():
        store.write(record)
    return store
