"""``multibert configs``: list the shipped configs, or copy them to a folder to edit.

The configs travel with the package (``pip install multibert`` installs them), so a user without the repository
can start from them: ``multibert configs copy --out my_configs`` then ``multibert fit -c my_configs/quickstart.yaml``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from datamodules import PACKAGE_ROOT


def configs_root() -> Path:
    """Where the shipped configs are: the repository's ``configs/`` (a source checkout or an editable install), or
    the copy installed with the package (``<prefix>/share/multibert/configs``)."""
    for root in (PACKAGE_ROOT / "configs", Path(sys.prefix) / "share" / "multibert" / "configs"):
        if (root / "quickstart.yaml").is_file():
            return root
    raise FileNotFoundError(
        "the shipped configs are not installed here (looked in the repository and in "
        f"{Path(sys.prefix) / 'share' / 'multibert' / 'configs'}); reinstall multibert or take configs/ from its repository"
    )


class Configs:
    """The shipped YAML configs: ``multibert configs list`` or ``multibert configs copy --out DIR``."""

    def list(self, pattern: str = "**/*.yaml") -> None:
        """Print the shipped configs (paths relative to the configs folder), with their first comment line.

        Args:
            pattern: a glob below the configs folder, e.g. ``finetune/*.yaml``.
        """
        root = configs_root()
        for path in sorted(root.glob(pattern)):
            first = next((line[1:].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")), "")
            print(f"{path.relative_to(root).as_posix():<34} {first}")
        print(f"({root})")

    def copy(self, out: str = "configs", overwrite: bool = False) -> None:
        """Copy the shipped configs to a folder (paths inside them, e.g. ``datamodules/data/...``, keep working:
        shipped data resolves from the installed package).

        Args:
            out: the folder to create.
            overwrite: replace files that exist there.
        """
        root, dest = configs_root(), Path(out)
        copied = 0
        for path in sorted(root.rglob("*.yaml")):
            target = dest / path.relative_to(root)
            if target.exists() and not overwrite:
                raise FileExistsError(f"{target} exists; pass --overwrite true or choose another --out")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied += 1
        print(f"copied {copied} configs from {root} to {dest}")
