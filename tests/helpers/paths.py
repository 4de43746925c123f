"""Where the repository is, for tests that run its scripts and read its files. conf/ is
the package's own: dist_lstm.config.compose.CONF_DIR."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
