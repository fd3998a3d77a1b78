"""The README's Python API example runs as written (on a temporary run folder)."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "charlstm.Model.load" in block and "charlstm.train" in block
    monkeypatch.chdir(README.parent)                  # configs/ as the README means it
    code = block.replace('"runs/tiny"', repr(str(tmp_path / "tiny")))
    namespace = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    result, model, score = namespace["result"], namespace["model"], namespace["score"]
    assert result.steps == 100 and result.best.exists()
    assert model.path == tmp_path / "tiny" / "best.npz" and 20 <= model.info["steps"] <= 200
    out = capsys.readouterr().out
    best_line, generated, *_ = out.split("\n")   # train is silent (echo=None) unless asked
    assert best_line == f"{result.best_val} {result.best}" and generated.startswith("the ")
    assert len(out) > 2 * 200 and score.chars == len("the cat sat")   # generate, then stream
