from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_public_api_names_the_users_verbs_and_types():
    import ladabert as L

    for name in (
        "finetune",
        "compress",
        "compress_model",
        "export",
        "benchmark",
        "evaluate",
        "build_student",
        "FinetuneConfig",
        "CompressConfig",
        "ExportConfig",
        "BenchConfig",
        "LadaBertForSequenceClassification",
        "OnnxClassifier",
        "LadaBertError",
    ):
        assert callable(getattr(L, name)), name
    assert set(L.__all__) <= set(dir(L))


def test_importing_the_cli_loads_no_torch():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ladabert.cli"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported and "ladabert" in imported


def test_kernels_import_nothing_from_the_pipeline():
    kernels = Path(__file__).resolve().parents[1] / "src" / "ladabert" / "kernels"
    for path in kernels.glob("*.py"):
        assert not re.search(r"ladabert\.pipeline|from \.\.pipeline", path.read_text()), path


def test_the_readme_python_example_runs_as_written(tmp_path, tiny_teacher, synthetic_glue, monkeypatch):
    code = re.search(r"## Python API\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    shutil.copytree(tiny_teacher, tmp_path / "runs" / "demo" / "teacher")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LADABERT_DATA_DIR", str(synthetic_glue))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    student, metrics = namespace["student"], namespace["metrics"]
    assert type(student).__name__ == "LadaBertForSequenceClassification"
    assert abs(metrics["ratio"] - 5.0) < 0.05 and metrics["value"] > 0.6  # the synthetic task is learnable
    assert (tmp_path / "runs" / "api" / "student-5x-onnx" / "model_quantized.onnx").is_file()


def test_settings_of_the_wrong_type_or_infinite_are_refused_by_name():
    import pytest

    from ladabert import CompressConfig, ExportConfig

    with pytest.raises(ValueError, match=r"ratio must be a number, got '5' \(str\)"):
        CompressConfig(ratio="5")
    with pytest.raises(ValueError, match="latency_budget must be a finite number, got inf"):
        CompressConfig(latency_budget=float("inf"))
    with pytest.raises(ValueError, match=r"align must be a number, got True \(bool\)"):
        ExportConfig(align=True)
    assert CompressConfig(ratio=5).ratio == 5
