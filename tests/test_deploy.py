"""Deployment files: conda env agrees with pyproject.toml; cloud profiles parse with their plugins."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[a-z,]+\])?==([^;\s]+)", req.strip())
        assert m, f"not pinned with ==: {req!r}"
        out[m[1].lower()] = m[3]
    return out


def test_conda_env_pins_match_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = pins(project["dependencies"])
    env = yaml.safe_load((ROOT / "envs" / "iclbench.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert pins([p for p in pip_section if not p.startswith("-e")]) == wanted
    assert "-e .." in pip_section  # installs this package
    assert conda_python == "python=3.11" and project["requires-python"].startswith(">=3.11,<3.12")


def test_every_rule_that_runs_python_has_conda() -> None:
    text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    rules = re.split(r"^rule ", text, flags=re.M)[1:]
    assert rules
    for body in rules:
        name = body.split(":", 1)[0]
        if "script:" in body or "shell:" in body or "run:" in body:
            assert 'conda:\n        "../../envs/iclbench.yaml"' in body, name


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway service-account file (a fresh RSA key, no real account)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path_factory.mktemp("sa") / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "throwaway", "private_key_id": "0",
        "private_key": pem, "client_email": "ci@throwaway.iam.gserviceaccount.com",
        "client_id": "0", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


def list_rules(profile: Path, credentials: Path) -> subprocess.CompletedProcess[str]:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(credentials), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run([SNAKEMAKE, "--profile", str(profile), "--list-rules"], cwd=ROOT,
                          env=env, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gcp", "gke", "default"])
def test_profile_parses_with_its_plugins(name: str, credentials: Path) -> None:
    proc = list_rules(ROOT / "profiles" / name, credentials)
    assert proc.returncode == 0, proc.stderr
    assert "train_model" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("name", "key"), [("gcp", "googlebatch-region"), ("gke", "kubernetes-namespace")])
def test_misspelled_profile_key_fails(name: str, key: str, credentials: Path, tmp_path: Path) -> None:
    profile = tmp_path / name
    shutil.copytree(ROOT / "profiles" / name, profile)
    config = profile / "config.yaml"
    text = config.read_text()
    assert f"\n{key}:" in text
    config.write_text(text.replace(f"\n{key}:", f"\n{key}x:"))
    proc = list_rules(profile, credentials)
    assert proc.returncode != 0
    assert f"{key}x" in proc.stderr


def test_gcp_profile_keeps_small_jobs_local_and_trains_on_a_gpu() -> None:
    profile = yaml.safe_load((ROOT / "profiles" / "gcp" / "config.yaml").read_text())
    assert profile["executor"] == "googlebatch" and profile["default-storage-provider"] == "gcs"
    assert profile["set-resources"]["train_model"]["nvidia_gpu"] == 1
    assert "train_model" in profile["preemptible-rules"]
    snakefile = (ROOT / "Snakefile").read_text()
    local = re.search(r"localrules:\n((?:\s+\w+,\n)+)", snakefile)
    assert local and {"aggregate_results", "plot_figure"} <= set(re.findall(r"\w+", local[1]))
