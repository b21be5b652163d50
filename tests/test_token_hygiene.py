"""No Hub token in any artifact (issue 13, item 6): not in the model card, the saved training arguments,
pipeline.json, the logs, or any other file the push would upload."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.publish import redacted_command

REPO = Path(__file__).resolve().parents[1]
CANARY = "hf_CANARYtokenThatMustNeverBeWritten0123"


def test_the_model_card_command_line_never_shows_a_token():
    argv = ["train/sft.py", "--config", "r.yaml", "--hub_token", CANARY, f"--hub_token={CANARY}", "--note", CANARY]
    command = redacted_command(argv)
    assert CANARY not in command
    assert command.startswith("python train/sft.py --config r.yaml --hub_token $HF_TOKEN --hub_token=$HF_TOKEN")


@pytest.mark.slow
def test_a_tiny_run_with_a_canary_token_writes_it_nowhere(tmp_path):
    out = tmp_path / "sft"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    proc = subprocess.run(
        [
            sys.executable,
            "train/sft.py",
            "--config",
            "train/recipes/tiny/sft.yaml",
            "--output_dir",
            str(out),
            "--hub_token",
            CANARY,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert CANARY not in proc.stdout + proc.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    # What the push uploads (the whole output folder, checkpoints aside) is among these files.
    assert {"README.md", "training_args.bin", "pipeline.json", "adapter_model.safetensors"} <= {p.name for p in files}
    leaked = [str(p.relative_to(tmp_path)) for p in files if CANARY.encode() in p.read_bytes()]
    assert not leaked, f"the token was written to {leaked}"
    # The card still says how to reproduce the run, with the token's place marked.
    assert "--hub_token $HF_TOKEN" in (out / "README.md").read_text(encoding="utf-8")
