"""The README's inference walkthrough, run exactly as written (in a scratch folder)."""

import os
import re
import subprocess

from tests.conftest import ROOT

MARKER = "<!-- the block below is run as written by tests/integration/test_readme.py -->"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    after = text[text.index(MARKER) + len(MARKER) :]
    return re.search(r"```bash\n(.*?)```", after, re.S).group(1)


def test_readme_inference_commands_work_as_written(tmp_path):
    # The commands use repository-relative paths: give them a scratch copy of the layout.
    for name in ("train.py", "conf", "dist_lstm"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = "set -eu\n" + readme_block()  # no pipefail: `zcat | head` ends zcat early
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len((tmp_path / "sample.en").read_text().splitlines()) == 20
    assert proc.stdout.count("BLEU = ") == 2 and '"bleu_signature"' in proc.stdout
    assert (tmp_path / "outputs" / "smoke" / "averaged.pt").is_file()
