"""Fixtures for the runner tests: tiny study specs written to tmp_path."""

import textwrap

import pytest

TINY = """
    description: "Tiny: test study"
    task: face
    base:
      data.synthetic.train_identities: 8
      data.synthetic.images_per_identity: 4
      optim.batch_size: 16
    grid:
      - model.atom: [dw, tvconv]
    presets:
      smoke: {base: smoke, seeds: [0, 1, 2]}
"""


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str = TINY, name: str = "tiny"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return write
