"""`target-keras`: GRD012 and GRD015 follow the Keras version the code targets."""
from __future__ import annotations

import json
from importlib.metadata import version

from gradlint.config import default_target_keras

from conftest import run_gradlint

NAME_FILTER = (
    "import keras\n"
    "frozen = [v for v in model.trainable_variables if v.name == 'encoder/kernel:0']\n"
)
OPTIMIZER_API = (
    "import keras\n"
    "opt = keras.optimizers.Adam()\n"
    "a = opt.minimize(loss, var_list=model.trainable_variables)\n"
    "b = opt.get_updates(loss, params)\n"
)


def codes_and_lines(result) -> set[tuple[str, int]]:
    return {(f["code"], f["line"]) for f in json.loads(result.stdout)["findings"]}


def test_default_is_the_installed_keras_major_version() -> None:
    installed = int(version("keras").split(".")[0])
    assert default_target_keras() == (2 if installed == 2 else 3)


def test_flag_switches_grd012_and_grd015(write) -> None:
    names = write("names.py", NAME_FILTER)
    api = write("api.py", OPTIMIZER_API)
    keras3 = run_gradlint("check", "--format", "json", "--target-keras", "3", str(names), str(api))
    assert codes_and_lines(keras3) == {("GRD012", 2), ("GRD015", 3), ("GRD015", 4)}
    keras2 = run_gradlint("check", "--format", "json", "--target-keras", "2", str(names), str(api))
    assert codes_and_lines(keras2) == {("GRD015", 4)}  # get_updates is gone since Keras 2.11


def test_pyproject_setting(tmp_path, write) -> None:
    write("pyproject.toml", "[tool.gradlint]\ntarget-keras = 2\n")
    path = write("names.py", NAME_FILTER)
    assert run_gradlint("check", str(path)).returncode == 0
    write("pyproject.toml", "[tool.gradlint]\ntarget-keras = 4\n")
    bad = run_gradlint("check", str(path))
    assert bad.returncode == 2 and "target-keras must be 2 or 3" in bad.stderr
