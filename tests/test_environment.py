"""requirements.txt (what make setup installs) and environment.yml pin the same versions."""
import re

from qrepro import paths


def pins(text):
    return dict(re.findall(r"^\s*-?\s*([A-Za-z0-9_.-]+)==([^\s#]+)", text, flags=re.M))


def test_requirements_and_environment_agree():
    req = pins((paths.REPO_ROOT / "requirements.txt").read_text())
    env = pins((paths.REPO_ROOT / "environment.yml").read_text())
    assert req["torch"] == "2.14.1" and req["torchvision"] == "0.29.1"
    assert req == env


def test_installed_versions_match_the_pins():
    import importlib.metadata as md

    req = pins((paths.REPO_ROOT / "requirements.txt").read_text())
    for name, version in req.items():
        assert md.version(name).split("+")[0] == version, name
