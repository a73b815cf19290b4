"""The fault suite shares tests/'s helpers (logging_state, train_cli, ...)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
